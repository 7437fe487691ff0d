"""BatchNormalization folding, the way the TFLite converter folds it.

At inference a BatchNormalization that follows a Conv2D/DepthwiseConv2D/Dense
is an affine map per output channel, so TFLite folds it into the kernel and
bias using the moving statistics:

    factor = gamma / sqrt(moving_variance + epsilon)
    kernel' = kernel * factor            (per output channel)
    bias'   = beta + (bias - moving_mean) * factor

Quantization-aware training must quantize `kernel'` (what TFLite will store),
not `kernel`, so the quantized layers compute this fold at every call.
"""

from keras_kd.backend import tf

__all__ = ["fold_batch_norm", "batch_norm_factors"]


def batch_norm_factors(gamma, beta, moving_mean, moving_variance, epsilon):
    """Per-channel `(factor, shift)` with BN(y) = y * factor + shift, in float32.

    Any of `gamma`/`beta` may be `None` (a BatchNormalization built with
    `scale=False`/`center=False`).
    """
    moving_mean = tf.cast(moving_mean, tf.float32)
    factor = tf.math.rsqrt(tf.cast(moving_variance, tf.float32) + epsilon)
    if gamma is not None:
        factor = factor * tf.cast(gamma, tf.float32)
    shift = -moving_mean * factor
    if beta is not None:
        shift = shift + tf.cast(beta, tf.float32)
    return factor, shift


def fold_batch_norm(kernel, bias, gamma, beta, moving_mean, moving_variance, epsilon, depthwise=False):
    """Folds a BatchNormalization into the kernel and bias of the layer before it.

    Args:
        kernel: Conv2D `(kh, kw, in, out)`, Dense `(in, out)`, or, with
            `depthwise=True`, DepthwiseConv2D `(kh, kw, in, multiplier)` kernel.
        bias: the layer's bias `(out,)`, or `None` for a layer without one.
        gamma, beta: BN scale and offset `(out,)`, or `None` when BN has none.
        moving_mean, moving_variance: BN moving statistics `(out,)`.
        epsilon: BN epsilon.
        depthwise: the kernel is a depthwise kernel, whose output channels are
            `in * multiplier` in input-major order.

    Returns:
        `(folded_kernel, folded_bias)`, float32 tensors; the bias always exists.

    Example:

    >>> kernel, bias = fold_batch_norm(
    ...     tf.ones((2, 3)), None, gamma=tf.fill((3,), 2.0), beta=tf.zeros(3),
    ...     moving_mean=tf.fill((3,), 1.0), moving_variance=tf.fill((3,), 3.0), epsilon=1.0)
    >>> kernel.numpy()[0].tolist(), bias.numpy().tolist()
    ([1.0, 1.0, 1.0], [-1.0, -1.0, -1.0])
    """
    kernel = tf.cast(kernel, tf.float32)
    factor, shift = batch_norm_factors(gamma, beta, moving_mean, moving_variance, epsilon)
    if depthwise:
        in_channels, multiplier = kernel.shape[-2], kernel.shape[-1]
        folded_kernel = kernel * tf.reshape(factor, (in_channels, multiplier))
    else:
        folded_kernel = kernel * factor
    folded_bias = shift if bias is None else tf.cast(bias, tf.float32) * factor + shift
    return folded_kernel, folded_bias
