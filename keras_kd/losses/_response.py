"""Response-based distillation: losses on the teacher's and student's final outputs."""

from keras_kd import _validate
from keras_kd.backend import tf
from keras_kd.losses._base import DistillationLoss, as_float32, describe, is_number, register_loss

__all__ = ["soft_target_kl_divergence", "SoftTargetKLDivergence", "reverse_kl_divergence", "ReverseKLDivergence",
           "logit_mse", "LogitMSE", "decoupled_kd", "DecoupledKD"]


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
    _validate.temperature(temperature, tensors=True)
    temperature = as_float32(temperature)
    student_log_probs = _log_probs(student, temperature, from_probabilities=False)
    teacher_log_probs = _log_probs(teacher, temperature, from_probabilities)
    teacher_probs = tf.exp(teacher_log_probs)
    kl = tf.reduce_sum(teacher_probs * (teacher_log_probs - student_log_probs), axis=-1)
    return kl * tf.square(temperature)


class _SoftenedDistributionLoss(DistillationLoss):
    """A loss between temperature-softened distributions: `function(teacher, student, T, from_probabilities)`."""

    uses_temperature = True

    def __init__(self, temperature, from_probabilities=False, teacher_layer_name=None, student_layer_name=None,
                 name=None, reduction="sum_over_batch_size"):
        _validate.temperature(temperature, tensors=True)
        super().__init__(teacher_layer_name=teacher_layer_name, student_layer_name=student_layer_name, name=name,
                         reduction=reduction)
        self.temperature = float(temperature)
        self.from_probabilities = bool(from_probabilities)

    def compute(self, teacher, student, temperature=None, **context):
        return type(self).function(
            teacher, student, self.temperature if temperature is None else temperature, self.from_probabilities
        )

    def get_config(self):
        config = super().get_config()
        config.update(temperature=self.temperature, from_probabilities=self.from_probabilities)
        return config


@register_loss("soft_target_kl")
class SoftTargetKLDivergence(_SoftenedDistributionLoss):
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

    function = staticmethod(soft_target_kl_divergence)

    def __init__(self, temperature=3.0, **kwargs):
        super().__init__(temperature, **kwargs)


def _log_probs(values, temperature, from_probabilities):
    """`log_softmax(z / T)` from logits, or from probabilities (`log p` is a logit up to a constant)."""
    values = as_float32(values)
    if from_probabilities:
        values = tf.math.log(tf.maximum(values, 1e-30))
    return tf.nn.log_softmax(values / temperature, axis=-1)


def reverse_kl_divergence(teacher, student, temperature=1.0, from_probabilities=False):
    """Reverse (mode-seeking) KL divergence, per example.

    `T**2 * KL(softmax(z_s / T) || softmax(z_t / T))`
    `= T**2 * sum_i p_s,i * (log p_s,i - log p_t,i)`

    The student puts its mass where the teacher has mass instead of covering
    every mode of the teacher, which suits students too small to spread over
    a large vocabulary (MiniLLM). Computed from `log_softmax` in float32.

    Paper: Y. Gu, L. Dong, F. Wei, M. Huang, "MiniLLM: Knowledge Distillation
    of Large Language Models", 2023.

    Args:
        teacher: teacher logits (or probabilities with `from_probabilities=True`).
        student: student logits, same shape.
        temperature: a float or scalar tensor > 0.
        from_probabilities: whether `teacher` holds probabilities.

    Returns:
        A float32 tensor of the outputs' shape without the last axis.

    Example:

    >>> import numpy as np
    >>> t = np.array([[2.0, 0.0, -2.0]]); s = np.array([[0.0, 0.0, 0.0]])
    >>> round(float(reverse_kl_divergence(t, s, temperature=2.0)[0]), 3)
    1.236
    """
    _validate.temperature(temperature, tensors=True)
    temperature = as_float32(temperature)
    teacher_log_probs = _log_probs(teacher, temperature, from_probabilities)
    student_log_probs = _log_probs(student, temperature, from_probabilities=False)
    kl = tf.reduce_sum(tf.exp(student_log_probs) * (student_log_probs - teacher_log_probs), axis=-1)
    return kl * tf.square(temperature)


@register_loss("reverse_kl")
class ReverseKLDivergence(_SoftenedDistributionLoss):
    """Reverse KL divergence `T**2 * KL(p_s || p_t)` (MiniLLM, Gu et al., 2023).

    See `reverse_kl_divergence` for the formula. Expects teacher logits, or
    teacher probabilities with `from_probabilities=True`; student logits.

    Args:
        temperature: initial temperature, > 0 (the Distiller's Variable
            replaces it during `fit`).
        from_probabilities: the teacher gives probabilities, not logits.
        teacher_layer_name, student_layer_name: layers to read (default: the
            final outputs).
        name: name in logs.

    Example:

    ```python
    distiller = keras_kd.Distiller(teacher, student, distillation_losses=ReverseKLDivergence(temperature=1.0))
    ```
    """

    function = staticmethod(reverse_kl_divergence)

    def __init__(self, temperature=1.0, **kwargs):
        super().__init__(temperature, **kwargs)


def logit_mse(teacher, student):
    """Mean squared error between logits, per example (Ba & Caruana, 2014).

    `L = mean_i (z_t,i - z_s,i)**2`

    Regressing the logits (not the probabilities) keeps the information the
    softmax squashes; it is the `T -> infinity` limit of the soft-target loss.
    Expects logits on both sides: probabilities cannot be turned back into
    logits (the softmax loses the per-example shift), so there is no
    `from_probabilities` here.

    Paper: J. Ba, R. Caruana, "Do Deep Nets Really Need to be Deep?", 2014.

    Args:
        teacher: teacher logits.
        student: student logits, same shape.

    Returns:
        A float32 tensor of the outputs' shape without the last axis.

    Example:

    >>> import numpy as np
    >>> float(logit_mse(np.array([[1.0, 3.0]]), np.array([[0.0, 0.0]]))[0])
    5.0
    """
    return tf.reduce_mean(tf.square(as_float32(teacher) - as_float32(student)), axis=-1)


@register_loss("logit_mse")
class LogitMSE(DistillationLoss):
    """Logit regression `mean_i (z_t,i - z_s,i)**2` (Ba & Caruana, 2014).

    Does not use the temperature. Expects logits from both models.

    Args:
        teacher_layer_name, student_layer_name: layers to read (default: the
            final outputs).
        name: name in logs.

    Example:

    ```python
    distiller = keras_kd.Distiller(teacher, student, distillation_losses="logit_mse")
    ```
    """

    function = staticmethod(logit_mse)

    def compute(self, teacher, student, **context):
        return logit_mse(teacher, student)


def _class_ids(labels, logits):
    """Sparse int32 class ids of the logits' shape without the last axis (one-hot labels are argmaxed).

    Negative ids (padding such as ignore_index=-100) become 0: the Distiller
    masks those positions out, and a valid index keeps the gather finite.
    """
    labels = tf.convert_to_tensor(labels)
    rank = len(logits.shape)
    if len(labels.shape) == rank and labels.shape[-1] == logits.shape[-1] and logits.shape[-1] != 1:
        labels = tf.argmax(labels, axis=-1)
    elif len(labels.shape) == rank and labels.shape[-1] == 1:
        labels = tf.squeeze(labels, -1)
    if len(labels.shape) != rank - 1:
        raise ValueError(
            f"Decoupled KD needs class ids of shape {tuple(logits.shape[:-1])} (or one-hot labels of shape "
            f"{tuple(logits.shape)}), got labels of shape {tuple(labels.shape)}."
        )
    labels = tf.cast(labels, tf.int32)
    return tf.where(labels < 0, tf.zeros_like(labels), labels)


def decoupled_kd(teacher, student, labels, temperature=4.0, alpha=1.0, beta=8.0, from_probabilities=False):
    """Decoupled knowledge distillation (DKD), per example.

    With `p = softmax(z / T)`, target class `y`, the binary distribution
    `b = [p_y, 1 - p_y]` and `p^` the softmax over the non-target classes only:

    `TCKD = T**2 * KL(b_t || b_s)`
    `NCKD = T**2 * KL(p^_t || p^_s)`
    `L = alpha * TCKD + beta * NCKD`

    Classic KD equals `TCKD + (1 - p_t,y) * NCKD`; DKD frees the non-target
    term from the `(1 - p_t,y)` damping. Everything is computed in log space
    (`log(1 - p_y)` as the log-sum-exp of the non-target logits), in float32.
    The paper's warm-up `min(epoch / warmup, 1)` is applied by scheduling the
    loss's weight in the Distiller (see `DecoupledKD`).

    Paper: B. Zhao, Q. Cui, R. Song, Y. Qiu, J. Liang, "Decoupled Knowledge
    Distillation", CVPR 2022.

    Args:
        teacher: teacher logits (or probabilities with `from_probabilities=True`).
        student: student logits, same shape.
        labels: class ids of shape `teacher.shape[:-1]`, or one-hot labels.
        temperature: a float or scalar tensor > 0 (the paper uses 4).
        alpha: weight of TCKD (paper: 1).
        beta: weight of NCKD (paper: 8 on CIFAR-100, 0.5 on ImageNet).
        from_probabilities: whether `teacher` holds probabilities.

    Returns:
        A float32 tensor of the outputs' shape without the last axis.

    Example:

    >>> import numpy as np
    >>> t = np.array([[3.0, 1.0, 0.0]]); s = np.array([[1.0, 1.0, 1.0]])
    >>> round(float(decoupled_kd(t, s, np.array([0]), temperature=1.0, alpha=1.0, beta=1.0)[0]), 3)
    0.668
    """
    _validate.temperature(temperature, tensors=True)
    temperature = as_float32(temperature)
    t_log = _log_probs(teacher, temperature, from_probabilities)
    s_log = tf.nn.log_softmax(as_float32(student) / temperature, axis=-1)
    num_classes = t_log.shape[-1]
    target = tf.one_hot(_class_ids(labels, t_log), num_classes, dtype=tf.float32)
    other = 1.0 - target
    # Non-target entries only: the target slot is pushed to -1e9 so it carries no mass.
    t_rest = t_log - 1e9 * target
    s_rest = s_log - 1e9 * target
    t_rest_lse = tf.reduce_logsumexp(t_rest, axis=-1)  # log(1 - p_t,y)
    s_rest_lse = tf.reduce_logsumexp(s_rest, axis=-1)
    t_y = tf.reduce_sum(t_log * target, axis=-1)
    s_y = tf.reduce_sum(s_log * target, axis=-1)
    tckd = tf.exp(t_y) * (t_y - s_y) + tf.exp(t_rest_lse) * (t_rest_lse - s_rest_lse)
    t_hat = t_rest - t_rest_lse[..., None]
    s_hat = s_rest - s_rest_lse[..., None]
    nckd = tf.reduce_sum(other * tf.exp(t_hat) * (t_hat - s_hat), axis=-1)
    return (alpha * tckd + beta * nckd) * tf.square(temperature)


@register_loss("dkd")
class DecoupledKD(DistillationLoss):
    """Decoupled KD: `T**2 * (alpha * TCKD + beta * NCKD)` (Zhao et al., CVPR 2022).

    See `decoupled_kd` for the formula. Needs the labels (the target class),
    so the Distiller must get labels. Expects teacher logits, or probabilities
    with `from_probabilities=True`; student logits.

    Warm-up: the paper multiplies the loss by `min(epoch / warmup, 1)` (20
    epochs on CIFAR). In keras_kd that factor is the loss's weight Variable in
    the Distiller, driven by a callback, so it follows the epoch counter
    exactly and survives checkpoints:

    ```python
    from keras_kd.callbacks import LossWeightScheduler
    from keras_kd.schedules import Constant, Warmup
    warmup = LossWeightScheduler("dkd", Warmup(Constant(1.0), warmup_steps=20))
    ```

    Args:
        temperature: initial temperature, > 0 (paper: 4).
        alpha: weight of the target-class term TCKD.
        beta: weight of the non-target-class term NCKD.
        from_probabilities: the teacher gives probabilities, not logits.
        teacher_layer_name, student_layer_name: layers to read.
        name: name in logs.

    Example:

    ```python
    distiller = keras_kd.Distiller(teacher, student, distillation_losses=DecoupledKD(alpha=1.0, beta=8.0),
                                   temperature=4.0)
    ```
    """

    function = staticmethod(decoupled_kd)
    uses_temperature = True

    def __init__(self, temperature=4.0, alpha=1.0, beta=8.0, from_probabilities=False, teacher_layer_name=None,
                 student_layer_name=None, name="dkd", reduction="sum_over_batch_size"):
        _validate.temperature(temperature, tensors=True)
        for what, value in (("alpha", alpha), ("beta", beta)):
            if not is_number(value) or not value >= 0:
                raise ValueError(f"DecoupledKD {what} must be a number >= 0, got {describe(value)}.")
        super().__init__(teacher_layer_name=teacher_layer_name, student_layer_name=student_layer_name, name=name,
                         reduction=reduction)
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.from_probabilities = bool(from_probabilities)

    def compute(self, teacher, student, temperature=None, labels=None, **context):
        if labels is None:
            raise ValueError(
                "DecoupledKD needs the ground-truth labels (it splits the target class from the others), but "
                "none were given. Fit the Distiller on (x, y) pairs."
            )
        return decoupled_kd(teacher, student, labels, self.temperature if temperature is None else temperature,
                            self.alpha, self.beta, self.from_probabilities)

    def call(self, y_true, y_pred):
        raise ValueError(
            "DecoupledKD needs three inputs (teacher logits, student logits, labels), which a plain "
            "model.compile(loss=...) cannot pass; use it in a keras_kd.Distiller or call decoupled_kd()."
        )

    def get_config(self):
        config = super().get_config()
        config.update(temperature=self.temperature, alpha=self.alpha, beta=self.beta,
                      from_probabilities=self.from_probabilities)
        return config
