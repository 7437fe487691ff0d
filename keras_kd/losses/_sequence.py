"""Token-level distillation of sequence models (language models, taggers)."""

from keras_kd import _validate
from keras_kd.backend import tf
from keras_kd.losses._base import DistillationLoss, as_float32, register_loss

__all__ = ["token_kl_divergence", "TokenKLDivergence"]  # padding_mask is the loss's helper: private


def padding_mask(labels, ignore_index=-100):
    """1.0 at real tokens, 0.0 where `labels == ignore_index` (float32, the labels' shape).

    Example:

    >>> import numpy as np
    >>> padding_mask(np.array([[5, 2, -100]])).numpy().tolist()
    [[1.0, 1.0, 0.0]]
    """
    labels = tf.convert_to_tensor(labels)
    return tf.cast(tf.not_equal(labels, tf.cast(ignore_index, labels.dtype)), tf.float32)


def token_kl_divergence(teacher, student, temperature=1.0, mask=None):
    """Soft-target KL per token, with padded positions contributing exactly 0.

    For outputs of shape `(batch, seq, vocab)` and a mask `m` of shape
    `(batch, seq)` (1 for real tokens):

    `L[b, s] = m[b, s] * T**2 * KL(softmax(z_t[b, s] / T) || softmax(z_s[b, s] / T))`

    Masked positions are replaced by zeros *before* the softmax, so whatever
    the models output there (even NaN or inf) changes neither the value nor
    the gradients. The mean over real tokens is
    `sum(L) / sum(m)`: the Distiller computes it (over the global batch);
    standalone, divide by `reduce_sum(mask)`.

    Paper: the token-level KD of Y. Kim, A. M. Rush, "Sequence-Level Knowledge
    Distillation", EMNLP 2016 (word-level KD), with the `T**2` of Hinton et al.

    Args:
        teacher: teacher logits `(..., vocab)`.
        student: student logits, same shape.
        temperature: a float or scalar tensor > 0.
        mask: None, or 1/0 (or bool) of the logits' shape without the last axis.

    Returns:
        A float32 tensor of the logits' shape without the last axis.

    Example:

    >>> import numpy as np
    >>> t = np.zeros((1, 2, 3)); t[0, 0] = [2.0, 0.0, -2.0]; s = np.zeros((1, 2, 3))
    >>> [round(float(v), 4) for v in token_kl_divergence(t, s, 2.0, mask=np.array([[1, 0]]))[0]]
    [1.0649, 0.0]
    """
    _validate.temperature(temperature, tensors=True)
    temperature = as_float32(temperature)
    teacher, student = as_float32(teacher), as_float32(student)
    if mask is not None:
        mask = tf.cast(mask, tf.float32)
        keep = tf.expand_dims(mask > 0, -1)
        teacher = tf.where(keep, teacher, tf.zeros_like(teacher))
        student = tf.where(keep, student, tf.zeros_like(student))
    teacher_log_probs = tf.nn.log_softmax(teacher / temperature, axis=-1)
    student_log_probs = tf.nn.log_softmax(student / temperature, axis=-1)
    kl = tf.reduce_sum(tf.exp(teacher_log_probs) * (teacher_log_probs - student_log_probs), axis=-1)
    kl = kl * tf.square(temperature)
    return kl if mask is None else kl * mask


@register_loss("token_kl")
class TokenKLDivergence(DistillationLoss):
    """Per-token soft-target KL for `(batch, seq, vocab)` outputs, padding-aware.

    The padding mask comes from the labels: positions where
    `labels == ignore_index` (the Distiller's default, -100) contribute 0 and
    are left out of the mean, which the Distiller takes over real tokens only.
    An explicit mask can be given as `sample_weight` of shape `(batch, seq)`
    instead: the Distiller then weights each token by it (use 0 for padding;
    the positions must hold finite values, as for any Keras sample weight).
    See `token_kl_divergence` for the formula.

    Args:
        temperature: initial temperature, > 0.
        ignore_index: label value marking padding; keep it equal to the
            Distiller's `ignore_index`.
        teacher_layer_name, student_layer_name: layers to read.
        name: name in logs.

    Example:

    ```python
    # y: (batch, seq) next-token ids, -100 at padding
    distiller = keras_kd.Distiller(teacher_lm, student_lm, distillation_losses=TokenKLDivergence(2.0))
    distiller.compile(optimizer="adam").fit(x, y)
    ```
    """

    function = staticmethod(token_kl_divergence)
    uses_temperature = True

    def __init__(self, temperature=1.0, ignore_index=-100, teacher_layer_name=None, student_layer_name=None,
                 name="token_kl", reduction="sum_over_batch_size"):
        _validate.temperature(temperature, tensors=True)
        super().__init__(teacher_layer_name=teacher_layer_name, student_layer_name=student_layer_name, name=name,
                         reduction=reduction)
        self.temperature = float(temperature)
        self.ignore_index = ignore_index

    def compute(self, teacher, student, temperature=None, labels=None, **context):
        mask = None
        if labels is not None and self.ignore_index is not None:
            labels = tf.convert_to_tensor(labels)
            if labels.dtype.is_integer and len(labels.shape) == len(student.shape) - 1:
                mask = padding_mask(labels, self.ignore_index)
        return token_kl_divergence(teacher, student, self.temperature if temperature is None else temperature, mask)

    def get_config(self):
        config = super().get_config()
        config.update(temperature=self.temperature, ignore_index=self.ignore_index)
        return config
