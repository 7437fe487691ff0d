"""Distillation from several teachers at once (an ensemble of soft targets)."""

from keras_kd import _validate
from keras_kd.backend import keras, tf
from keras_kd.losses._base import DistillationLoss, as_float32, register_loss

# stack_teachers builds the teacher model a loss here expects: a helper, importable but out of __all__.
__all__ = ["multi_teacher_kl_divergence", "MultiTeacherKLDivergence"]


def stack_teachers(teachers, input_shape=None, name="multi_teacher"):
    """One frozen Functional model whose output stacks the teachers' logits: `(batch, k, classes)`.

    Use it as the Distiller's `teacher` with `MultiTeacherKLDivergence`: the
    loss applies the Distiller's temperature to each teacher *before*
    averaging, which a model averaging probabilities itself could not do.
    The teachers may differ in architecture; they must take the same input
    and give logits of the same shape.

    Args:
        teachers: a list of at least two built `keras.Model`s giving logits.
        input_shape: shape of one input sample; default: the first teacher's.
        name: the model's name.

    Returns:
        A `keras.Model` with `trainable = False`.

    Example:

    ```python
    ensemble = stack_teachers([cnn_teacher, mlp_teacher])
    distiller = keras_kd.Distiller(ensemble, student,
                                   distillation_losses=MultiTeacherKLDivergence(teacher_weights=[0.7, 0.3]))
    ```
    """
    teachers = list(teachers)
    if len(teachers) < 2:
        raise ValueError(f"stack_teachers needs at least two teachers, got {len(teachers)}.")
    for index, teacher in enumerate(teachers):
        if not isinstance(teacher, keras.Model):
            raise TypeError(f"teachers[{index}] must be a keras.Model, got {type(teacher).__name__}.")
    if input_shape is None:
        inputs = getattr(teachers[0], "inputs", None)
        if not inputs or len(inputs) != 1:
            raise ValueError(
                f"Cannot tell the input shape of the teacher {teachers[0].name!r} (subclassed or several inputs); "
                "pass input_shape=(...) for one sample."
            )
        input_shape = tuple(inputs[0].shape)[1:]
    x = keras.Input(tuple(input_shape), name=f"{name}_input")
    outputs = []
    for teacher in teachers:
        out = teacher(x, training=False)
        outputs.append(keras.layers.Lambda(lambda t: tf.cast(t, "float32"))(out) if out.dtype != "float32" else out)
    shapes = {tuple(o.shape)[1:] for o in outputs}
    if len(shapes) != 1:
        raise ValueError(
            f"The teachers give outputs of different shapes {sorted(shapes)}; multi-teacher distillation "
            "averages their soft targets, so every teacher must predict the same classes."
        )
    stacked = keras.layers.Concatenate(axis=1, name=f"{name}_stack")(
        [keras.layers.Reshape((1,) + tuple(o.shape)[1:])(o) for o in outputs])
    model = keras.Model(x, stacked, name=name)
    model.trainable = False
    return model


def _normalized_weights(teacher_weights, count):
    if teacher_weights is None:
        return [1.0 / count] * count
    total = float(sum(teacher_weights))
    return [float(w) / total for w in teacher_weights]


def multi_teacher_kl_divergence(teachers, student, temperature=1.0, teacher_weights=None):
    """Soft-target KL to the weighted average of several teachers' softened distributions, per example.

    With teacher logits `z_k`, weights `w_k` (normalised to sum to 1):

    `p_bar = sum_k w_k * softmax(z_k / T)`
    `L = T**2 * KL(p_bar || softmax(z_s / T))`

    `log p_bar` is computed as `logsumexp_k(log w_k + log_softmax(z_k / T))`
    in float32, so each teacher is softened by `T` before averaging.

    Paper: the ensemble soft targets of G. Hinton, O. Vinyals, J. Dean,
    "Distilling the Knowledge in a Neural Network", 2015; S. You, C. Xu,
    C. Xu, D. Tao, "Learning from Multiple Teacher Networks", KDD 2017.

    Args:
        teachers: stacked teacher logits `(batch, k, classes)` (see
            `stack_teachers`).
        student: student logits `(batch, classes)`.
        temperature: a float or scalar tensor > 0.
        teacher_weights: None (equal) or `k` non-negative weights.

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:

    >>> import numpy as np
    >>> t = np.array([[[4.0, 0.0], [0.0, 4.0]]]); s = np.zeros((1, 2))
    >>> round(float(multi_teacher_kl_divergence(t, s, 1.0)[0]), 4)
    0.0
    """
    _validate.temperature(temperature, tensors=True)
    temperature = as_float32(temperature)
    teachers = as_float32(teachers)
    count = teachers.shape[1]
    weights = tf.constant(_normalized_weights(teacher_weights, count), tf.float32)
    log_probs = tf.nn.log_softmax(teachers / temperature, axis=-1)
    log_weights = tf.math.log(tf.maximum(weights, 1e-30))[:, None]
    mean_log_probs = tf.reduce_logsumexp(log_probs + log_weights, axis=1)
    student_log_probs = tf.nn.log_softmax(as_float32(student) / temperature, axis=-1)
    kl = tf.reduce_sum(tf.exp(mean_log_probs) * (mean_log_probs - student_log_probs), axis=-1)
    return kl * tf.square(temperature)


@register_loss("multi_teacher_kl")
class MultiTeacherKLDivergence(DistillationLoss):
    """Soft-target KL to several teachers' averaged softened distributions (see `multi_teacher_kl_divergence`).

    The Distiller's teacher is `stack_teachers([...])`, whose output is
    `(batch, k, classes)` logits; the Distiller's temperature is applied to
    each teacher before the weighted average.

    Args:
        teacher_weights: None (equal) or one non-negative weight per teacher.
        temperature: initial temperature > 0.
        teacher_layer_name, student_layer_name: layers to read.
        name: name in logs.

    Example:

    ```python
    ensemble = stack_teachers([teacher_a, teacher_b])
    distiller = keras_kd.Distiller(ensemble, student, distillation_losses=MultiTeacherKLDivergence([2.0, 1.0]),
                                   temperature=4.0)
    ```
    """

    function = staticmethod(multi_teacher_kl_divergence)
    uses_temperature = True

    def __init__(self, teacher_weights=None, temperature=3.0, teacher_layer_name=None, student_layer_name=None,
                 name="multi_teacher_kl", reduction="sum_over_batch_size"):
        _validate.temperature(temperature, tensors=True)
        if teacher_weights is not None:
            teacher_weights = [float(w) for w in teacher_weights]
            if any(w < 0 for w in teacher_weights) or sum(teacher_weights) <= 0:
                raise ValueError(f"teacher_weights must be non-negative with a positive sum, got {teacher_weights}.")
        super().__init__(teacher_layer_name=teacher_layer_name, student_layer_name=student_layer_name, name=name,
                         reduction=reduction)
        self.teacher_weights = teacher_weights
        self.temperature = float(temperature)

    def validate_shapes(self, teacher_shape, student_shape):
        if teacher_shape is None or student_shape is None:
            return
        teacher_shape, student_shape = tuple(teacher_shape), tuple(student_shape)
        if len(teacher_shape) != len(student_shape) + 1 or teacher_shape[2:] != student_shape[1:]:
            raise ValueError(
                f"MultiTeacherKLDivergence expects stacked teacher logits (batch, k, classes) and student logits "
                f"(batch, classes); got teacher {teacher_shape} and student {student_shape}. Build the teacher "
                "with keras_kd.losses.stack_teachers([...])."
            )
        if self.teacher_weights is not None and teacher_shape[1] != len(self.teacher_weights):
            raise ValueError(
                f"MultiTeacherKLDivergence has {len(self.teacher_weights)} teacher_weights but the teacher stacks "
                f"{teacher_shape[1]} teachers; give one weight per teacher."
            )

    def compute(self, teacher, student, temperature=None, **context):
        return multi_teacher_kl_divergence(teacher, student, self.temperature if temperature is None else temperature,
                                           self.teacher_weights)

    def get_config(self):
        config = super().get_config()
        config.update(teacher_weights=self.teacher_weights, temperature=self.temperature)
        return config
