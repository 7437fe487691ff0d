"""Input-gradient matching (Sobolev training): match how the outputs change with the inputs."""

from keras_kd.backend import tf
from keras_kd.losses._base import DistillationLoss, as_float32, register_loss

__all__ = ["input_gradient_distance", "cross_entropy_input_gradient", "InputGradientMatching"]


def input_gradient_distance(teacher_gradients, student_gradients):
    """Squared L2 distance between two input gradients, per example: `sum_x (g_t - g_s)**2`.

    Args:
        teacher_gradients: `(batch, ...)` gradient of the teacher's objective w.r.t. the input.
        student_gradients: the student's, same shape.

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:

    >>> import numpy as np
    >>> float(input_gradient_distance(np.array([[1.0, 2.0]]), np.array([[0.0, 0.0]]))[0])
    5.0
    """
    squared = tf.square(as_float32(teacher_gradients) - as_float32(student_gradients))
    return tf.reduce_sum(tf.reshape(squared, (tf.shape(squared)[0], -1)), axis=-1)


def cross_entropy_input_gradient(logits_fn, x, targets):
    """`d/dx CE(targets, logits_fn(x))` for each example (the batch sum is differentiated; examples are independent).

    Args:
        logits_fn: `x -> logits`.
        x: a float input tensor.
        targets: int class ids `(batch,)`.

    Returns:
        The gradient, shaped like `x`.
    """
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        objective = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, as_float32(logits_fn(x))))
    return tape.gradient(objective, x)


@register_loss("input_gradient")
class InputGradientMatching(DistillationLoss):
    """Matches input gradients of teacher and student (Sobolev training, Czarnecki et al., NeurIPS 2017).

    `L = || d/dx CE(y*, z_t(x)) - d/dx CE(y*, z_s(x)) ||_2**2` per example,

    with `y* = argmax z_t(x)`, the teacher's predicted class: both models are
    asked how the loss of the *teacher's* decision changes with each input
    value, which needs no labels and is the scalar-projection form of the
    paper's Jacobian matching (the paper also matches random projections of
    the full Jacobian; one class direction is cheaper and what the loss
    surface near the decision depends on).

    Training with it is double backprop: the Distiller runs the student's
    forward pass under a tape that watches `x` (it does this whenever a loss
    sets `uses_input_gradients`), this loss differentiates the student's
    cross-entropy w.r.t. `x` on that tape, and the training tape
    differentiates the result w.r.t. the student's weights. It costs one
    extra teacher forward/backward and roughly two extra student passes per
    step. Inputs must be one float tensor (not a dict); cached teacher
    outputs are fine (the teacher model is run here).

    Paper: W. M. Czarnecki, S. Osindero, M. Jaderberg, G. Swirszcz,
    R. Pascanu, "Sobolev Training for Neural Networks", NeurIPS 2017.

    Args:
        name: name in logs.

    Example:

    ```python
    Distiller(teacher, student, distillation_losses=["soft_target_kl", InputGradientMatching()],
              distillation_loss_weights=[1.0, 10.0])
    ```
    """

    function = staticmethod(input_gradient_distance)
    uses_input_gradients = True

    def __init__(self, name="input_gradient", reduction="sum_over_batch_size"):
        super().__init__(name=name, reduction=reduction)

    def compute(self, teacher, student, inputs=None, input_tape=None, teacher_model=None, **context):
        if input_tape is None or teacher_model is None or inputs is None:
            raise ValueError(
                "InputGradientMatching needs the input, the teacher model and the tape of the student's forward "
                "pass; use it inside a keras_kd.Distiller, which provides them."
            )
        if not isinstance(inputs, tf.Tensor) or not inputs.dtype.is_floating:
            raise ValueError(
                "InputGradientMatching differentiates w.r.t. the input, which must be one float tensor; got "
                f"{type(inputs).__name__}. Feed the Distiller a single float input."
            )
        targets = tf.argmax(as_float32(teacher), axis=-1, output_type=tf.int32)
        with input_tape:
            objective = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, as_float32(student)))
        student_gradients = input_tape.gradient(objective, inputs)
        teacher_gradients = tf.stop_gradient(cross_entropy_input_gradient(
            lambda x: teacher_model(x, training=False), inputs, targets))
        return input_gradient_distance(teacher_gradients, student_gradients)

    def get_config(self):
        config = super().get_config()
        config.pop("teacher_layer_name", None)
        config.pop("student_layer_name", None)
        return config

    def call(self, y_true, y_pred):
        raise ValueError("InputGradientMatching needs the models and the input; use it in a keras_kd Distiller.")
