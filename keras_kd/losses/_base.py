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

import numbers

import numpy as np

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
    float32. The keyword context the Distiller passes:

    * `temperature`: the Distiller's temperature Variable (as a float32
      tensor) when the class sets `uses_temperature = True`; otherwise None.
    * `labels`: the ground-truth labels (or None) for losses that need them.
    * `state`: the Layer this loss returned from `create_state()`, or None.
    * `inputs`: the batch inputs.

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
    #: True when `compute` takes the Distiller's scheduled `temperature`.
    uses_temperature = False
    #: True when `compute` needs the ground-truth labels.
    uses_labels = False
    registered_name = None

    def __init__(self, teacher_layer_name=None, student_layer_name=None, name=None, reduction="sum_over_batch_size"):
        super().__init__(name=name or self.registered_name or self.__class__.__name__, reduction=reduction)
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name

    @property
    def uses_features(self):
        """True when the loss reads an intermediate layer of the teacher or the student."""
        return self.teacher_layer_name is not None or self.student_layer_name is not None

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


def is_number(value, integer=False):
    """True for a real number, Python or NumPy (`4`, `4.0`, `np.float32(4)`, a 0-d array), but not a bool.

    Every hyperparameter that takes a number (a temperature, alpha, a loss
    weight, a schedule's values) is checked with this, so NumPy scalars work
    wherever Python numbers do.

    Example:

    >>> import numpy as np
    >>> [is_number(v) for v in (4, 4.0, np.float32(4), np.array(4.0), True, "4")]
    [True, True, True, True, False, False]
    """
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, (bool, np.bool_)):
        return False
    return isinstance(value, numbers.Integral if integer else numbers.Real)


def describe(value):
    """`value!r` and, for anything that is not a number, its type: for error messages."""
    return repr(value) if is_number(value) or value is None else f"{value!r} (a {type(value).__name__})"
