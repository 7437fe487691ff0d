"""Response-based distillation: losses on the teacher's and student's final outputs."""

from keras_kd.backend import tf
from keras_kd.losses.base import DistillationLoss, as_float32, register_loss

__all__ = ["soft_target_kl_divergence", "SoftTargetKLDivergence"]


def _validate_temperature(temperature):
    if isinstance(temperature, (int, float)):
        if not temperature > 0 or temperature == float("inf"):
            raise ValueError(
                f"temperature must be a finite number > 0, got {temperature!r}. Typical values are 1 to 10."
            )


def soft_target_kl_divergence(teacher, student, temperature=1.0, from_probabilities=False):
    """Hinton et al. (2015) soft-target loss, per example.

    `T**2 * KL(softmax(z_t / T) || softmax(z_s / T))`
    `= T**2 * sum_i p_t,i * (log p_t,i - log p_s,i)`

    computed from `log_softmax` in float32, so it stays finite for logits of
    magnitude 1e4. The `T**2` factor keeps the gradient magnitude of this term
    independent of `T` (the soft-target gradients scale as `1/T**2`).

    Paper: G. Hinton, O. Vinyals, J. Dean, "Distilling the Knowledge in a
    Neural Network", 2015.

    Args:
        teacher: teacher logits (or probabilities with `from_probabilities=True`,
            in which case the temperature is applied as `p**(1/T)` renormalised).
        student: student logits, same shape.
        temperature: a float or scalar tensor > 0.
        from_probabilities: whether `teacher` holds probabilities.

    Returns:
        A float32 tensor of the outputs' shape without the last axis.

    Example:

    >>> import numpy as np
    >>> t = np.array([[2.0, 0.0, -2.0]]); s = np.array([[0.0, 0.0, 0.0]])
    >>> round(float(soft_target_kl_divergence(t, s, temperature=2.0)[0]), 4)
    1.0649
    """
    _validate_temperature(temperature)
    temperature = as_float32(temperature)
    student_log_probs = tf.nn.log_softmax(as_float32(student) / temperature, axis=-1)
    teacher = as_float32(teacher)
    if from_probabilities:
        teacher_log_probs = tf.nn.log_softmax(tf.math.log(tf.maximum(teacher, 1e-30)) / temperature, axis=-1)
    else:
        teacher_log_probs = tf.nn.log_softmax(teacher / temperature, axis=-1)
    teacher_probs = tf.exp(teacher_log_probs)
    kl = tf.reduce_sum(teacher_probs * (teacher_log_probs - student_log_probs), axis=-1)
    return kl * tf.square(temperature)


@register_loss("soft_target_kl")
class SoftTargetKLDivergence(DistillationLoss):
    """Soft-target KL divergence with the `T**2` factor (Hinton et al., 2015).

    `L = T**2 * KL(softmax(z_t / T) || softmax(z_s / T))`, per example, in
    float32 from `log_softmax`. Inside a `Distiller` the temperature is the
    Distiller's scheduled `temperature` Variable; `temperature` here is its
    initial value (and the value used when this loss is used on its own).

    This is the loss `keras.distillation.LogitsDistillation()` means to
    compute; its default (`loss="kl_divergence"`) applies Keras' KL to raw
    logits without softmax or `T**2`, which keras_kd deliberately fixes.

    Args:
        temperature: initial temperature, > 0.
        from_probabilities: the teacher gives probabilities, not logits.
        teacher_layer_name, student_layer_name: read these layers instead of
            the final outputs (they must output logits of the same shape).
        name: name in logs.

    Example:

    ```python
    distiller = keras_kd.Distiller(teacher=teacher, student=student)
    distiller.compile(optimizer="adam", distillation_loss=SoftTargetKLDivergence(temperature=4.0))
    ```
    """

    uses_temperature = True

    def __init__(self, temperature=3.0, from_probabilities=False, teacher_layer_name=None, student_layer_name=None,
                 name="soft_target_kl", reduction="sum_over_batch_size"):
        _validate_temperature(temperature)
        super().__init__(teacher_layer_name=teacher_layer_name, student_layer_name=student_layer_name, name=name,
                         reduction=reduction)
        self.temperature = float(temperature)
        self.from_probabilities = bool(from_probabilities)

    def compute(self, teacher, student, temperature=None, **context):
        return soft_target_kl_divergence(
            teacher, student, self.temperature if temperature is None else temperature, self.from_probabilities
        )

    def get_config(self):
        config = super().get_config()
        config.update(temperature=self.temperature, from_probabilities=self.from_probabilities)
        return config
