"""The contract every distillation loss follows, and the registry that names them.

A distillation loss in keras_kd is two things in one place:

* a pure function of tensors (`soft_target_kl_divergence(teacher, student, T)`)
  that returns one value per example (or per token), computed in float32; and
* a serializable `keras.losses.Loss` subclass of `DistillationLoss` whose
  `compute()` calls that function. The Distiller calls `compute()` and reduces
  the per-example values itself, so the mean is taken over the *global* batch
  under `tf.distribute` and over real tokens only under a padding mask.

Losses hold no weights. A loss that needs something trainable (a FitNets
projection) or some state (a CRD memory bank) returns a Layer from
`create_state()`; the Distiller owns and trains that layer, passes it back as
`state=` and leaves it out of the exported student.
"""

from keras_kd._validate import describe, is_number  # noqa: F401 (the losses' and callers' import)
from keras_kd.backend import keras, tf

__all__ = ["DistillationLoss", "register_loss", "get", "serialize", "registered_names"]

_REGISTRY = {}


def register_loss(name):
    """Class decorator: registers a `DistillationLoss` under `name` and with Keras serialization.

    Example:

    ```python
    @register_loss("my_kd")
    class MyKD(DistillationLoss):
        def compute(self, teacher, student, **kwargs):
            return tf.reduce_sum(tf.square(teacher - student), axis=-1)
    ```
    """

    def decorate(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(
                f"A distillation loss is already registered as {name!r} ({_REGISTRY[name].__name__}); "
                f"choose another name for {cls.__name__}."
            )
        _REGISTRY[name] = cls
        cls.registered_name = name
        return keras.saving.register_keras_serializable(package="keras_kd", name=cls.__name__)(cls)

    return decorate


def registered_names():
    """The names `get()` accepts, sorted."""
    return sorted(_REGISTRY)


def get(identifier):
    """Resolves a distillation loss from a name, a config dict, or an instance.

    Args:
        identifier: a registered name such as `"soft_target_kl"`, a dict from
            `serialize()` / `keras.saving.serialize_keras_object`, or a
            `DistillationLoss` instance (returned unchanged).

    Example:

    >>> get("soft_target_kl").__class__.__name__
    'SoftTargetKLDivergence'
    """
    if isinstance(identifier, DistillationLoss):
        return identifier
    if isinstance(identifier, str):
        if identifier not in _REGISTRY:
            raise ValueError(
                f"Unknown distillation loss {identifier!r}. Known names: {', '.join(registered_names())}."
            )
        return _REGISTRY[identifier]()
    if isinstance(identifier, dict):
        loss = keras.saving.deserialize_keras_object(identifier)
        if not isinstance(loss, DistillationLoss):
            raise ValueError(f"The config {identifier!r} does not describe a keras_kd DistillationLoss.")
        return loss
    raise TypeError(
        f"Expected a distillation loss name, config dict or DistillationLoss instance, got "
        f"{type(identifier).__name__}: {identifier!r}."
    )


def serialize(loss):
    """Serializes a loss to a JSON-friendly dict (`get()` reverses it)."""
    return keras.saving.serialize_keras_object(loss)


class DistillationLoss(keras.losses.Loss):
    """Base class of keras_kd distillation losses.

    Subclasses implement `compute(teacher, student, **context)` returning the
    loss per example (shape: the outputs' shape without the last axis) in
    float32.

    What a loss needs from the Distiller is declared by the attributes below,
    and the Distiller reads exactly these:

    * `uses_temperature` (class attribute): `compute` takes the loss's
      scheduled `temperature`, and `temperature` holds its initial value. The
      Distiller gives each such loss one non-trainable temperature Variable.
    * `teacher_layer_name` / `student_layer_name`: the intermediate layers
      (features) the loss reads; None means the final outputs (logits).
    * `uses_input_gradients` (class attribute): `compute` differentiates the
      student w.r.t. its inputs; the Distiller then records the student's
      forward pass on a tape that watches the inputs and passes it as
      `input_tape=`, with the teacher model as `teacher_model=`.
    * `from_probabilities`: the teacher output it reads holds probabilities,
      not logits (the Distiller warns when a softmax teacher feeds a loss on
      logits).

    The keyword context `compute` gets:

    * `temperature`: the loss's temperature Variable (as a float32 tensor)
      when `uses_temperature`; otherwise None.
    * `labels`: the ground-truth labels, or None when the data has none
      (under `mixing`, the label of each example's larger part).
    * `state`: the Layer this loss returned from `create_state()`, or None.
    * `inputs`: the batch inputs.
    * `input_tape`, `teacher_model`: only when `uses_input_gradients`.

    Used on its own (`model.compile(loss=SoftTargetKLDivergence())` with the
    teacher's outputs as `y_true`), a loss uses its configured temperature.

    Args:
        teacher_layer_name: name of the teacher layer whose output this loss
            reads; None means the teacher's final output (logits).
        student_layer_name: likewise for the student.
        name: the loss name, used in logs (default: its registered name).
        reduction: Keras reduction for standalone use.
    """

    #: The pure function this loss computes (per example), e.g. `staticmethod(soft_target_kl_divergence)`.
    #: The docs table of `keras_kd.losses` and its golden-value tests read it from the registry.
    function = None
    #: True when `compute` takes a scheduled `temperature`; `temperature` is then the initial value.
    uses_temperature = False
    #: The initial temperature of a loss that uses one (set by its constructor).
    temperature = None
    #: True when `compute` differentiates the student w.r.t. its inputs (it gets `input_tape=`).
    uses_input_gradients = False
    #: True when the teacher output this loss reads holds probabilities rather than logits.
    from_probabilities = False
    registered_name = None

    def __init__(self, teacher_layer_name=None, student_layer_name=None, name=None, reduction="sum_over_batch_size"):
        super().__init__(name=name or self.registered_name or self.__class__.__name__, reduction=reduction)
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name

    def compute(self, teacher, student, **context):  # pragma: no cover - abstract
        raise NotImplementedError(f"{self.__class__.__name__} must implement compute(teacher, student, **context).")

    def create_state(self, teacher_shape, student_shape):
        """Returns a Layer the Distiller should own for this loss (trainable adapter, memory bank), or None."""
        return None

    def validate_shapes(self, teacher_shape, student_shape):
        """Raises ValueError when the loss cannot compare outputs of these shapes (checked at construction).

        Losses that bridge shapes with an adapter from `create_state` override this.
        """
        if teacher_shape is None or student_shape is None:
            return
        if tuple(teacher_shape)[1:] != tuple(student_shape)[1:]:
            raise ValueError(
                f"{self.__class__.__name__} compares outputs of the same shape, but the teacher gives "
                f"{tuple(teacher_shape)} and the student {tuple(student_shape)}. Make the student's output "
                "match the teacher's (same number of classes), or pick layers with matching shapes."
            )

    def call(self, y_true, y_pred):
        return self.compute(y_true, y_pred, temperature=None)

    def get_config(self):
        config = super().get_config()
        config.update(teacher_layer_name=self.teacher_layer_name, student_layer_name=self.student_layer_name)
        return config


def as_float32(x):
    """Casts a tensor to float32 (losses compute in float32 even under mixed precision)."""
    x = tf.convert_to_tensor(x)
    return x if x.dtype == tf.float32 else tf.cast(x, tf.float32)
