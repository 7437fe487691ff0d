"""Distillation of real-valued outputs (regression students)."""

from keras_kd.backend import tf
from keras_kd.losses._base import DistillationLoss, as_float32, register_loss

__all__ = ["regression_distillation", "regression_kd_objective", "RegressionDistillation"]


def _per_example_mean_square(a, b):
    squared = tf.square(as_float32(a) - as_float32(b))
    if len(squared.shape) <= 1:
        return squared
    return tf.reduce_mean(squared, axis=-1)


def regression_distillation(teacher, student):
    """The teacher term of regression distillation, per example: `mean_j (y_t,j - y_s,j)**2`.

    Outputs of shape `(batch,)` give one value per example as they are; any
    other shape is averaged over its last axis (so `(batch, seq, d)` gives one
    value per position, which the Distiller can mask).

    Paper: the student-teacher regression term of G. Chen, W. Choi, X. Yu,
    T. Han, M. Chandraker, "Learning Efficient Object Detection Models with
    Knowledge Distillation", NeurIPS 2017 (without its teacher bound), and
    the regression case of Hinton et al. (2015).

    Args:
        teacher: the teacher's real-valued outputs.
        student: the student's outputs, same shape.

    Returns:
        A float32 tensor, one value per example (or position).

    Example:

    >>> import numpy as np
    >>> [float(v) for v in regression_distillation(np.array([[1.0, 2.0]]), np.array([[0.0, 0.0]]))]
    [2.5]
    """
    return _per_example_mean_square(teacher, student)


def regression_kd_objective(labels, teacher, student, alpha=0.5, beta=0.5):
    """The whole regression distillation loss, per example.

    `L = alpha * MSE(y, y_s) + beta * MSE(y_t, y_s)`

    Inside a `keras_kd.Distiller` (`student_loss="mse"`, distillation loss
    `RegressionDistillation()`) the same objective is
    `(alpha + beta) * [a * MSE(y_t, y_s) + (1 - a) * MSE(y, y_s)]` with the
    Distiller's `alpha = a = beta / (alpha + beta)`; the overall factor
    `alpha + beta` only rescales the learning rate.

    Args:
        labels: ground-truth targets `y`.
        teacher: teacher outputs `y_t`.
        student: student outputs `y_s`.
        alpha: weight of the task term.
        beta: weight of the teacher term.

    Returns:
        A float32 tensor, one value per example.

    Example:

    >>> import numpy as np
    >>> y, t, s = np.array([[1.0]]), np.array([[0.5]]), np.array([[0.0]])
    >>> float(regression_kd_objective(y, t, s, alpha=1.0, beta=2.0)[0])
    1.5
    """
    return alpha * _per_example_mean_square(labels, student) + beta * _per_example_mean_square(teacher, student)


@register_loss("regression_mse")
class RegressionDistillation(DistillationLoss):
    """Teacher term `MSE(y_t, y_s)` for regression students (see `regression_distillation`).

    Use it with `student_loss="mse"` so the Distiller adds the task term:

        loss = a * MSE(y_t, y_s) + (1 - a) * MSE(y, y_s)

    where `a` is the Distiller's `alpha`. The two-weight form
    `alpha' * MSE(y, y_s) + beta' * MSE(y_t, y_s)` of the literature is the
    same up to the factor `alpha' + beta'` with `a = beta' / (alpha' + beta')`.

    Args:
        teacher_layer_name, student_layer_name: layers to read (default: the
            final outputs).
        name: name in logs.

    Example:

    ```python
    distiller = keras_kd.Distiller(teacher, student, distillation_losses=RegressionDistillation(), alpha=0.5)
    distiller.compile(optimizer="adam", student_loss="mse")
    ```
    """

    function = staticmethod(regression_distillation)

    def compute(self, teacher, student, **context):
        return regression_distillation(teacher, student)
