"""Accepting `keras.distillation` loss objects (Keras >= 3.12), and the keras.io example's, in a keras_kd Distiller.

`LogitsDistillation` and `FeatureDistillation` keep their meaning, with one
deliberate fix: `LogitsDistillation(loss="kl_divergence")`, its default,
resolves in Keras to the *function* `keras.losses.kl_divergence`, which then
receives raw logits (no softmax, no `T**2`). Here it becomes
`SoftTargetKLDivergence`, the loss it was meant to be.

The keras.io knowledge-distillation example passes `distillation_loss_fn`, a
Keras loss applied to `softmax(z_t / T)` and `softmax(z_s / T)` and multiplied
by `T**2`: `from_keras_io_distillation_loss_fn` gives the keras_kd loss that
computes the same value (`SoftTargetKLDivergence` for `KLDivergence`).
"""

from keras_kd.backend import keras, tf
from keras_kd.losses._base import DistillationLoss, as_float32
from keras_kd import _validate
from keras_kd.losses._response import SoftTargetKLDivergence

__all__ = ["from_keras_distillation_loss", "KerasDistillationLoss", "from_keras_io_distillation_loss_fn",
           "SoftenedProbabilitiesLoss"]


def _is_kl(loss_fn):
    if isinstance(loss_fn, str):
        return loss_fn in ("kl_divergence", "kld", "KLD", "kullback_leibler_divergence", "KLDivergence")
    if isinstance(loss_fn, keras.losses.KLDivergence):
        return True
    return getattr(loss_fn, "__name__", "") in ("kl_divergence", "kld", "kullback_leibler_divergence")


def _per_example(loss_fn, teacher, student):
    if isinstance(loss_fn, keras.losses.Loss):
        config = loss_fn.get_config()
        config["reduction"] = "none"
        loss_fn = loss_fn.__class__.from_config(config)
    values = as_float32(loss_fn(teacher, student))
    while len(values.shape) > 1:
        values = tf.reduce_mean(values, axis=-1)
    return values


@keras.saving.register_keras_serializable(package="keras_kd")
class KerasDistillationLoss(DistillationLoss):
    """A `keras.distillation` loss, computed per example so keras_kd can reduce it over the global batch.

    Args:
        loss: a Keras loss (name, function or instance) applied to
            `(teacher_outputs, student_outputs)`.
        kind: `"logits"` (both divided by the Distiller's temperature first,
            as `LogitsDistillation` does) or `"features"` (used as they are).
        temperature: initial temperature for `kind="logits"`.
        teacher_layer_name, student_layer_name: layers to read.

    Example:

    ```python
    loss = KerasDistillationLoss("categorical_crossentropy", kind="logits", temperature=4.0)
    ```
    """

    def __init__(self, loss="mse", kind="features", temperature=3.0, teacher_layer_name=None,
                 student_layer_name=None, name=None, reduction="sum_over_batch_size"):
        if kind not in ("logits", "features"):
            raise ValueError(f"kind must be 'logits' or 'features', got {kind!r}.")
        super().__init__(teacher_layer_name=teacher_layer_name, student_layer_name=student_layer_name,
                         name=name or f"keras_{kind}_distillation", reduction=reduction)
        self.loss = keras.losses.get(loss) if isinstance(loss, (str, dict)) else loss
        self.kind = kind
        self.temperature = float(temperature)
        self.uses_temperature = kind == "logits"

    def compute(self, teacher, student, temperature=None, **context):
        if self.kind == "logits":
            temperature = as_float32(self.temperature if temperature is None else temperature)
            teacher, student = as_float32(teacher) / temperature, as_float32(student) / temperature
        return _per_example(self.loss, teacher, student)

    def get_config(self):
        config = super().get_config()
        config.update(loss=keras.losses.serialize(self.loss), kind=self.kind, temperature=self.temperature)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["loss"] = keras.losses.deserialize(config["loss"])
        return cls(**config)


class _CustomKerasDistillationLoss(DistillationLoss):
    """A user subclass of `keras.distillation.DistillationLoss`: its scalar `compute_loss` is used as is."""

    def __init__(self, wrapped):
        super().__init__(teacher_layer_name=getattr(wrapped, "teacher_layer_name", None),
                         student_layer_name=getattr(wrapped, "student_layer_name", None),
                         name=type(wrapped).__name__)
        self.wrapped = wrapped

    def compute(self, teacher, student, **context):
        return as_float32(self.wrapped.compute_loss(teacher, student))

    def validate_shapes(self, teacher_shape, student_shape):
        return None

    def get_config(self):
        return {"wrapped": keras.saving.serialize_keras_object(self.wrapped), **super().get_config()}


def _single_loss(loss):
    """The one non-None loss of a keras.distillation loss (keras_kd distils one tensor per loss)."""
    inner = loss.loss
    if not isinstance(inner, (list, tuple, dict)):
        return inner
    flat = [l for l in keras.tree.flatten(inner) if l is not None]
    if len(flat) != 1:
        raise ValueError(
            f"keras_kd distils one tensor per loss; this {type(loss).__name__} has losses for several outputs "
            f"({inner!r}). Give one loss object per output, with teacher/student layer names."
        )
    return flat[0]


def from_keras_distillation_loss(loss):
    """Converts a `keras.distillation` loss object to its keras_kd equivalent, or returns None.

    Example:

    ```python
    from_keras_distillation_loss(keras.distillation.LogitsDistillation(temperature=4.0))
    # -> SoftTargetKLDivergence(temperature=4.0)
    ```
    """
    distillation = getattr(keras, "distillation", None)
    if distillation is None or not isinstance(loss, distillation.DistillationLoss):
        return None
    if isinstance(loss, distillation.LogitsDistillation):
        inner = _single_loss(loss)
        if _is_kl(inner):
            return SoftTargetKLDivergence(temperature=loss.temperature)
        return KerasDistillationLoss(inner, kind="logits", temperature=loss.temperature)
    if isinstance(loss, distillation.FeatureDistillation):
        inner = _single_loss(loss)
        return KerasDistillationLoss(inner, kind="features", teacher_layer_name=loss.teacher_layer_name,
                                     student_layer_name=loss.student_layer_name)
    return _CustomKerasDistillationLoss(loss)


@keras.saving.register_keras_serializable(package="keras_kd")
class SoftenedProbabilitiesLoss(DistillationLoss):
    """A Keras loss applied to softened probabilities, as the keras.io distillation example does.

    `L = T**2 * loss(softmax(z_t / T), softmax(z_s / T))`, per example.

    Args:
        loss: a Keras loss (name, function or instance) taking `(y_true, y_pred)` probabilities.
        temperature: initial temperature, > 0.
        teacher_layer_name, student_layer_name: layers to read.
        name: name in logs.

    Example:

    ```python
    loss = SoftenedProbabilitiesLoss(keras.losses.MeanSquaredError(), temperature=4.0)
    ```
    """

    uses_temperature = True

    def __init__(self, loss="kl_divergence", temperature=3.0, teacher_layer_name=None, student_layer_name=None,
                 name="softened_probabilities_loss", reduction="sum_over_batch_size"):
        _validate.temperature(temperature, tensors=True)
        super().__init__(teacher_layer_name=teacher_layer_name, student_layer_name=student_layer_name, name=name,
                         reduction=reduction)
        self.loss = keras.losses.get(loss) if isinstance(loss, (str, dict)) else loss
        self.temperature = float(temperature)

    def compute(self, teacher, student, temperature=None, **context):
        temperature = as_float32(self.temperature if temperature is None else temperature)
        teacher = tf.nn.softmax(as_float32(teacher) / temperature, axis=-1)
        student = tf.nn.softmax(as_float32(student) / temperature, axis=-1)
        return _per_example(self.loss, teacher, student) * tf.square(temperature)

    def get_config(self):
        config = super().get_config()
        config.update(loss=keras.losses.serialize(self.loss), temperature=self.temperature)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["loss"] = keras.losses.deserialize(config["loss"])
        return cls(**config)


def from_keras_io_distillation_loss_fn(loss_fn, temperature):
    """The keras_kd loss for the keras.io example's `distillation_loss_fn` at `temperature`.

    `KLDivergence` (the example's choice) becomes `SoftTargetKLDivergence`, the
    same value computed from `log_softmax` (no clipping of small
    probabilities); any other Keras loss is applied to the softened
    probabilities as the example does.

    Example:

    >>> type(from_keras_io_distillation_loss_fn(keras.losses.KLDivergence(), 10.0)).__name__
    'SoftTargetKLDivergence'
    """
    if isinstance(loss_fn, DistillationLoss):
        return loss_fn
    if _is_kl(loss_fn):
        return SoftTargetKLDivergence(temperature=temperature)
    if not (isinstance(loss_fn, (str, dict)) or callable(loss_fn)):
        raise ValueError(f"distillation_loss_fn must be a Keras loss (name, function or instance), got {loss_fn!r}.")
    return SoftenedProbabilitiesLoss(loss_fn, temperature=temperature)
