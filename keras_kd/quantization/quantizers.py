"""Fake-quantization numerics: what TFLite will do to a tensor, simulated in float32.

Two kinds of quantizer, matching the TFLite int8 specification:

* weights: symmetric, `narrow_range` (int8 values in [-127, 127], zero point 0),
  per output channel for Conv2D/DepthwiseConv2D and per tensor for Dense. Their
  range is the current max |w|, recomputed at every call, so nothing is stored.
* activations: asymmetric per tensor (int8 values in [-128, 127]). The range is
  an exponential moving average of the batch min/max in training and is used
  as-is at inference; it lives in non-trainable variables (`FakeQuant` layer).

The ops are `tf.quantization.fake_quant_with_min_max_vars[_per_channel]`, which
the TFLite converter turns into int8 quantization parameters. They nudge the
range so that 0.0 is exactly representable; `quantization_params` reproduces that
nudging in NumPy so that a test (or the export check) can predict the scale and
zero point that the `.tflite` file will carry.
"""

import numpy as np

from keras_kd.backend import tf

__all__ = [
    "quantization_params",
    "fake_quant_reference",
    "fake_quant_weights",
    "fake_quant_activations",
    "round_average",
]


def _check_num_bits(num_bits):
    if not isinstance(num_bits, int) or not 2 <= num_bits <= 8:
        raise ValueError(
            f"num_bits must be an integer in [2, 8] (TensorFlow's fake-quant ops support no more), "
            f"got {num_bits!r}. Use num_bits=8 for TFLite int8."
        )


def quantization_params(min_value, max_value, num_bits=8, narrow_range=False):
    """The scale and zero point TensorFlow's fake-quant ops derive from a float range.

    The range is nudged so that 0.0 falls exactly on the integer grid, as
    `FakeQuantWithMinMaxVars` does (and as the TFLite converter records it).
    The zero point is returned in signed int8 terms (the grid shifted by
    -2**(num_bits-1)), the way a `.tflite` file stores it.

    Args:
        min_value: lower end(s) of the float range (scalar or array, one per channel).
        max_value: upper end(s) of the float range, same shape as `min_value`.
        num_bits: bit width, 2 to 8.
        narrow_range: when True the lowest integer is not used ([-127, 127] for
            int8), as TFLite requires for weights.

    Returns:
        A tuple `(scale, zero_point, nudged_min, nudged_max)` of NumPy arrays
        (float32, int64, float32, float32) with the shape of `min_value`.

    Example:

    >>> scale, zero_point, lo, hi = quantization_params(0.0, 6.0)
    >>> float(scale), int(zero_point)
    (0.0235294122248888, -128)
    """
    _check_num_bits(num_bits)
    min_value = np.asarray(min_value, dtype=np.float32)
    max_value = np.asarray(max_value, dtype=np.float32)
    if np.any(min_value > max_value):
        raise ValueError(f"min_value must not exceed max_value, got min={min_value} and max={max_value}.")
    quant_min = np.float32(1.0 if narrow_range else 0.0)
    quant_max = np.float32(2**num_bits - 1)
    scale = ((max_value - min_value) / (quant_max - quant_min)).astype(np.float32)
    safe_scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
    zero_point_from_min = quant_min - min_value / safe_scale
    # TensorFlow rounds half away from zero here (std::round), not half to even.
    rounded = np.floor(zero_point_from_min + np.float32(0.5))
    nudged_zero_point = np.clip(rounded, quant_min, quant_max).astype(np.float32)
    nudged_min = ((quant_min - nudged_zero_point) * scale).astype(np.float32)
    nudged_max = ((quant_max - nudged_zero_point) * scale).astype(np.float32)
    zero_point = nudged_zero_point.astype(np.int64) - 2 ** (num_bits - 1)
    return scale, zero_point, nudged_min, nudged_max


def fake_quant_reference(values, min_value, max_value, num_bits=8, narrow_range=False, axis=None):
    """NumPy reference of TensorFlow's fake quantization (for tests and checks).

    Args:
        values: float array.
        min_value, max_value: the range; scalars, or 1-D arrays (one per slice
            along `axis`) for per-channel quantization.
        num_bits, narrow_range: as in `quantization_params`.
        axis: the channel axis for per-channel ranges, `None` for per tensor.

    Returns:
        `values` clamped to the nudged range and rounded to the integer grid, float32.

    Example:

    >>> fake_quant_reference([0.1, 7.0, -1.0], 0.0, 6.0).astype(float).round(4).tolist()
    [0.0941, 6.0, 0.0]
    """
    values = np.asarray(values, dtype=np.float32)
    scale, _, nudged_min, nudged_max = quantization_params(min_value, max_value, num_bits, narrow_range)
    if axis is not None:
        shape = [1] * values.ndim
        shape[axis] = -1
        scale, nudged_min, nudged_max = (np.reshape(a, shape) for a in (scale, nudged_min, nudged_max))
    clamped = np.clip(values, nudged_min, nudged_max)
    safe_scale = np.where(scale > 0, scale, np.float32(1.0))
    steps = np.floor((clamped - nudged_min) / safe_scale + np.float32(0.5))
    return (steps * scale + nudged_min).astype(np.float32)


def fake_quant_weights(kernel, channel_axis=None, num_bits=8):
    """Symmetric, narrow-range fake quantization of a kernel, as TFLite quantizes weights.

    The range of each channel is [-max|w|, max|w|]. Gradients pass straight
    through to `kernel` inside the range (the fake-quant op's own gradient).

    Args:
        kernel: a float tensor (cast to float32 for the op).
        channel_axis: `None` for one scale for the whole tensor (Dense), or the
            axis that holds the output channels, which must be the last one
            (the op quantizes along the last dimension; reshape first otherwise).
        num_bits: bit width, 8 for TFLite int8.

    Returns:
        The fake-quantized kernel, float32.

    Example:

    >>> kernel = tf.constant([[0.5, -1.0], [0.25, 0.1]])
    >>> fake_quant_weights(kernel, channel_axis=-1).numpy().astype(float).round(4).tolist()
    [[0.5, -1.0], [0.252, 0.1024]]
    """
    _check_num_bits(num_bits)
    kernel = tf.cast(kernel, tf.float32)
    if channel_axis is None:
        bound = weight_bound(kernel)
        return tf.quantization.fake_quant_with_min_max_vars(
            kernel, -bound, bound, num_bits=num_bits, narrow_range=True
        )
    rank = kernel.shape.rank
    if channel_axis not in (-1, rank - 1):
        raise ValueError(
            f"channel_axis must be the last axis ({rank - 1} or -1) for a rank-{rank} kernel, got "
            f"{channel_axis!r}. Move the channel axis last before quantizing."
        )
    bound = weight_bound(kernel, per_channel=True)
    return tf.quantization.fake_quant_with_min_max_vars_per_channel(
        kernel, -bound, bound, num_bits=num_bits, narrow_range=True
    )


def weight_bound(kernel, per_channel=False):
    """`b` of the symmetric range `[-b, b]` TFLite quantizes a float32 kernel to: `max |w|` over the tensor,
    or per output channel (the last axis), at least 1e-8; no gradient. The int8 step is `b / 127`."""
    axes = list(range(kernel.shape.rank - 1)) if per_channel else None
    return tf.stop_gradient(tf.maximum(tf.reduce_max(tf.abs(kernel), axis=axes), 1e-8))


def fake_quant_activations(values, min_value, max_value, num_bits=8):
    """Asymmetric per-tensor fake quantization of activations, computed in float32.

    Args:
        values: a float tensor of any float dtype (float16 under mixed precision).
        min_value, max_value: scalar range (variables or tensors); no gradient
            flows into them.
        num_bits: bit width, 8 for TFLite int8.

    Returns:
        The fake-quantized values, cast back to the dtype of `values`.

    Example:

    >>> fake_quant_activations(tf.constant([0.1, 7.0]), 0.0, 6.0).numpy().astype(float).round(4).tolist()
    [0.0941, 6.0]
    """
    _check_num_bits(num_bits)
    dtype = values.dtype
    outputs = tf.quantization.fake_quant_with_min_max_vars(
        tf.cast(values, tf.float32),
        tf.stop_gradient(tf.cast(min_value, tf.float32)),
        tf.stop_gradient(tf.cast(max_value, tf.float32)),
        num_bits=num_bits,
        narrow_range=False,
    )
    return tf.cast(outputs, dtype)


#: How far from a rounding tie `round_average` still tells a tie: an average of n int8 values is a
#: multiple of 1/n, so a non-tie is at least 1/(2n) from one; float32 error is ~1e-5 of a step.
_TIE_TOLERANCE = 1e-3


def round_average(average, min_value, max_value, num_bits=8, ties="away"):
    """An average of values on an activation grid, rounded back to that grid as TFLite's int8 kernels do.

    AVERAGE_POOL_2D keeps its input's scale and zero point, sums the int8
    values `q` of a window (zero point included) and divides by their count,
    rounding half away from zero: `sign(s) * floor((|s| + n // 2) / n)` for a
    sum `s` of `n` values, on XNNPACK and on the builtin kernels alike
    (measured). For windows of up to 500 values that is the window's mean `q`
    rounded half away from zero, which this computes in float32.
    RESIZE_BILINEAR's weighted average of four pixels also keeps its input's
    grid; XNNPACK rounds it half up (`ties="up"`, measured on every value of a
    2x upsampling), the builtin kernels half away from zero. Gradients pass
    straight through the rounding.

    Args:
        average: the float average of values fake-quantized to `[min_value, max_value]`.
        min_value, max_value: that range (as the `FakeQuant` before uses it).
        num_bits: bit width, 8 for TFLite int8.
        ties: "away" (half away from zero on `q`) or "up" (half towards +inf).

    Returns:
        `average` on the grid, as the file computes it.

    Example:

    >>> step = 1.0 / 255  # the range [0, 1]: q = 255 * value - 128
    >>> values = tf.constant([[0.0, 1.0], [1.0, 2.0]]) * step  # q: -128 and -127, -127 and -126
    >>> (round_average(tf.reduce_mean(values, axis=1), 0.0, 1.0) / step).numpy().round(3).tolist()
    [0.0, 1.0]
    """
    _check_num_bits(num_bits)
    if ties not in ("away", "up"):
        raise ValueError(f"ties must be 'away' or 'up', got {ties!r}.")
    dtype = average.dtype
    average = tf.cast(average, tf.float32)
    low = tf.stop_gradient(tf.cast(min_value, tf.float32))
    high = tf.stop_gradient(tf.cast(max_value, tf.float32))
    quant_max = float(2**num_bits - 1)
    scale = (high - low) / quant_max
    scale = tf.where(scale > 0, scale, tf.ones_like(scale))
    zero = tf.clip_by_value(tf.floor(-low / scale + 0.5), 0.0, quant_max)  # TF's nudged zero point
    half = float(2 ** (num_bits - 1))
    q = average / scale + zero - half  # the int8 value, not yet rounded
    if ties == "up":
        rounded = tf.floor(q + 0.5 + _TIE_TOLERANCE)
    else:
        rounded = tf.sign(q) * tf.floor(tf.abs(q) + 0.5 + _TIE_TOLERANCE)
    outputs = (rounded + half - zero) * scale
    return tf.cast(average + tf.stop_gradient(outputs - average), dtype)
