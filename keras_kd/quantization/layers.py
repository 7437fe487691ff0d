"""Keras 3 layers that simulate TFLite int8 inference during training.

* `FakeQuant`: asymmetric per-tensor activation quantizer whose range is an
  exponential moving average of batch min/max (training) and is used as-is at
  inference. Quantizes model inputs and the outputs of layers that TFLite
  gives their own int8 parameters.
* `QuantizedConv2D`, `QuantizedDepthwiseConv2D`, `QuantizedDense`: a Keras
  layer (kept inside, for its weights and config) with an optional folded
  BatchNormalization, a fused ReLU/ReLU6 and a `FakeQuant` on the output; the
  kernel is folded and fake-quantized at every call exactly as TFLite stores it.
* `QuantizedOutput`: any layer whose int8 kernel needs only an output
  quantizer (Add, Concatenate, pooling, Softmax, a standalone ReLU).

Every range and step counter is a non-trainable weight, so `.keras` files,
checkpoints and `BackupAndRestore` keep them. Fake-quant math is float32 even
when the layer computes in float16 (mixed precision).
"""

from keras_kd.backend import keras, tf
from keras_kd.quantization.folding import fold_batch_norm
from keras_kd.quantization.quantizers import fake_quant_activations, fake_quant_weights

__all__ = [
    "FakeQuant",
    "QuantizedConv2D",
    "QuantizedDepthwiseConv2D",
    "QuantizedDense",
    "QuantizedOutput",
    "FUSED_ACTIVATIONS",
]

#: Activations TFLite fuses into Conv/Dense/Add kernels.
FUSED_ACTIVATIONS = ("linear", "relu", "relu6")

_DEFAULT_EMA_DECAY = 0.99


def _apply_activation(values, activation):
    if activation == "relu":
        return tf.nn.relu(values)
    if activation == "relu6":
        return tf.nn.relu6(values)
    return values


def _check_activation(activation):
    if activation not in FUSED_ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {FUSED_ACTIVATIONS} (the activations TFLite fuses), got "
            f"{activation!r}. Keep other activations as their own layer."
        )


def _check_ema_decay(ema_decay):
    if not 0.0 <= float(ema_decay) < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay!r}. Typical values are 0.99 to 0.999.")


def _as_layer(value, what):
    if value is None or isinstance(value, keras.layers.Layer):
        return value
    if isinstance(value, dict):
        return keras.saving.deserialize_keras_object(value)
    raise TypeError(f"{what} must be a keras Layer or its serialized config, got {type(value).__name__}.")


@keras.saving.register_keras_serializable(package="keras_kd")
class FakeQuant(keras.layers.Layer):
    """Fake-quantizes a tensor to int8 with a moving-average (or fixed) range.

    In training (`training=True`) the range is updated to
    `decay * range + (1 - decay) * batch_range` (the first batch sets it
    directly), where the batch range is `[min(x.min(), 0), max(x.max(), 0)]`,
    and the updated range is used. Otherwise the stored range is used unchanged.
    Under `tf.distribute` the update is averaged over replicas. Before the first
    training step the range is `initial_range` (TFLite's usual [-6, 6]).

    Args:
        num_bits: bit width, 8 for TFLite int8.
        ema_decay: decay of the moving average, in [0, 1).
        fixed_range: `(min, max)` to use always instead of tracking (for
            example TFLite's softmax output range); `None` to track.
        initial_range: the range used before the first training step.
        **kwargs: standard layer arguments (`name`, `dtype`).

    Example:

    >>> layer = FakeQuant()
    >>> outputs = layer(tf.constant([[-1.0, 0.5, 3.0]]), training=True)
    >>> [round(float(v), 4) for v in (layer.min_value, layer.max_value)]
    [-1.0, 3.0]
    """

    def __init__(self, num_bits=8, ema_decay=_DEFAULT_EMA_DECAY, fixed_range=None, initial_range=(-6.0, 6.0), **kwargs):
        super().__init__(**kwargs)
        _check_ema_decay(ema_decay)
        if fixed_range is not None:
            fixed_range = tuple(float(v) for v in fixed_range)
            if len(fixed_range) != 2 or not fixed_range[0] <= 0.0 <= fixed_range[1] or fixed_range[0] == fixed_range[1]:
                raise ValueError(
                    f"fixed_range must be (min, max) with min <= 0 <= max and min < max, got {fixed_range!r}."
                )
        self.num_bits = int(num_bits)
        self.ema_decay = float(ema_decay)
        self.fixed_range = fixed_range
        self.initial_range = tuple(float(v) for v in initial_range)
        self.supports_masking = True

    def build(self, input_shape):
        low, high = self.fixed_range or self.initial_range
        self.min_value = self.add_weight(
            name="min_value",
            shape=(),
            dtype="float32",
            initializer=keras.initializers.Constant(low),
            trainable=False,
            autocast=False,
            aggregation="mean",
        )
        self.max_value = self.add_weight(
            name="max_value",
            shape=(),
            dtype="float32",
            initializer=keras.initializers.Constant(high),
            trainable=False,
            autocast=False,
            aggregation="mean",
        )
        self.steps = self.add_weight(
            name="steps",
            shape=(),
            dtype="int64",
            initializer="zeros",
            trainable=False,
            autocast=False,
            aggregation="only_first_replica",
        )

    def call(self, inputs, training=None):
        if training and self.fixed_range is None:
            values = tf.stop_gradient(tf.cast(inputs, tf.float32))
            batch_min = tf.minimum(tf.reduce_min(values), 0.0)
            batch_max = tf.maximum(tf.reduce_max(values), 0.0)
            first = tf.equal(self.steps, 0)
            decay = self.ema_decay
            new_min = tf.where(first, batch_min, decay * self.min_value + (1.0 - decay) * batch_min)
            new_max = tf.where(first, batch_max, decay * self.max_value + (1.0 - decay) * batch_max)
            self.min_value.assign(new_min)
            self.max_value.assign(new_max)
            self.steps.assign(self.steps + 1)
            low, high = new_min, new_max
        else:
            low, high = self.min_value, self.max_value
        return fake_quant_activations(inputs, low, high, num_bits=self.num_bits)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            num_bits=self.num_bits,
            ema_decay=self.ema_decay,
            fixed_range=list(self.fixed_range) if self.fixed_range is not None else None,
            initial_range=list(self.initial_range),
        )
        return config


class _QuantizedWrapper(keras.layers.Layer):
    """Shared plumbing: an inner layer, a fused activation and an optional output quantizer."""

    def __init__(
        self,
        layer,
        activation="linear",
        quantize_output=True,
        num_bits=8,
        ema_decay=_DEFAULT_EMA_DECAY,
        output_range=None,
        fused_layers=None,
        **kwargs,
    ):
        layer = _as_layer(layer, "layer")
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(**kwargs)
        _check_activation(activation)
        self.layer = layer
        self.activation = activation
        self.quantize_output = bool(quantize_output)
        self.num_bits = int(num_bits)
        self.ema_decay = float(ema_decay)
        self.output_range = tuple(output_range) if output_range is not None else None
        self.fused_layers = list(fused_layers) if fused_layers else [layer.name]
        self.output_quantizer = (
            FakeQuant(
                num_bits=num_bits,
                ema_decay=ema_decay,
                fixed_range=self.output_range,
                name="output_quantizer",
                dtype=self.dtype_policy,
            )
            if self.quantize_output
            else None
        )

    def _finish(self, outputs, training):
        outputs = _apply_activation(outputs, self.activation)
        if self.output_quantizer is not None:
            outputs = self.output_quantizer(outputs, training=training)
        return outputs

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)  # the inner layer carries the dtype policy
        config.update(
            layer=keras.saving.serialize_keras_object(self.layer),
            activation=self.activation,
            quantize_output=self.quantize_output,
            num_bits=self.num_bits,
            ema_decay=self.ema_decay,
            output_range=list(self.output_range) if self.output_range is not None else None,
            fused_layers=self.fused_layers,
        )
        return config


class _QuantizedWeightLayer(_QuantizedWrapper):
    """Conv2D/DepthwiseConv2D/Dense with BN folding and weight fake-quant."""

    _wrapped_class = None

    def __init__(self, layer, batch_norm=None, **kwargs):
        layer = _as_layer(layer, "layer")
        if type(layer) is not self._wrapped_class:
            raise TypeError(
                f"{type(self).__name__} wraps a keras.layers.{self._wrapped_class.__name__}, got "
                f"{type(layer).__name__} ({layer.name!r})."
            )
        super().__init__(layer, **kwargs)
        self.batch_norm = _as_layer(batch_norm, "batch_norm")

    def build(self, input_shape):
        # Inner layers deserialized from a `.keras` file arrive already built.
        if not self.layer.built:
            self.layer.build(input_shape)
        output_shape = self.layer.compute_output_shape(input_shape)
        if self.batch_norm is not None and not self.batch_norm.built:
            self.batch_norm.build(output_shape)
        if self.output_quantizer is not None and not self.output_quantizer.built:
            self.output_quantizer.build(output_shape)

    def folded_kernel_and_bias(self):
        """The kernel and bias TFLite will store (BN folded), float32, before quantization."""
        kernel = self.layer.kernel
        bias = self.layer.bias if self.layer.use_bias else None
        if self.batch_norm is None:
            return tf.cast(kernel, tf.float32), (None if bias is None else tf.cast(bias, tf.float32))
        bn = self.batch_norm
        return fold_batch_norm(
            kernel,
            bias,
            gamma=bn.gamma if bn.scale else None,
            beta=bn.beta if bn.center else None,
            moving_mean=bn.moving_mean,
            moving_variance=bn.moving_variance,
            epsilon=bn.epsilon,
            depthwise=isinstance(self.layer, keras.layers.DepthwiseConv2D),
        )

    def quantized_kernel(self):
        """The folded kernel after int8 fake quantization, float32."""
        kernel, _ = self.folded_kernel_and_bias()
        return self._quantize_kernel(kernel)

    def call(self, inputs, training=None):
        kernel, bias = self.folded_kernel_and_bias()
        kernel = tf.cast(self._quantize_kernel(kernel), self.compute_dtype)
        outputs = self._apply_kernel(inputs, kernel)
        if bias is not None:
            outputs = tf.nn.bias_add(outputs, tf.cast(bias, self.compute_dtype))
        return self._finish(outputs, training)

    def get_config(self):
        config = super().get_config()
        config["batch_norm"] = (
            keras.saving.serialize_keras_object(self.batch_norm) if self.batch_norm is not None else None
        )
        return config


@keras.saving.register_keras_serializable(package="keras_kd")
class QuantizedConv2D(_QuantizedWeightLayer):
    """A Conv2D (+ folded BatchNormalization + fused ReLU) with int8 fake quantization.

    The kernel is quantized per output channel (symmetric, narrow range), the
    output per tensor with a moving-average range (unless `quantize_output=False`,
    used when a following Concatenate sets the scale).

    Args:
        layer: the `keras.layers.Conv2D` to wrap (channels_last, `groups=1`);
            its own activation must be linear (pass the activation here).
        batch_norm: a `keras.layers.BatchNormalization` to fold, or `None`.
        activation: "linear", "relu" or "relu6", applied after the bias.
        quantize_output: put a `FakeQuant` on the output.
        num_bits, ema_decay: quantizer settings.
        output_range: fixed output range instead of a tracked one.
        fused_layers: names of the original layers this one replaces.

    Example:

    >>> conv = keras.layers.Conv2D(4, 3, name="conv")
    >>> layer = QuantizedConv2D(conv, activation="relu")
    >>> layer(tf.ones((1, 5, 5, 2))).shape
    TensorShape([1, 3, 3, 4])
    """

    _wrapped_class = keras.layers.Conv2D

    def _quantize_kernel(self, kernel):
        return fake_quant_weights(kernel, channel_axis=-1, num_bits=self.num_bits)

    def _apply_kernel(self, inputs, kernel):
        return tf.nn.convolution(
            inputs,
            kernel,
            strides=list(self.layer.strides),
            padding=self.layer.padding.upper(),
            dilations=list(self.layer.dilation_rate),
        )


@keras.saving.register_keras_serializable(package="keras_kd")
class QuantizedDepthwiseConv2D(_QuantizedWeightLayer):
    """A DepthwiseConv2D (+ folded BatchNormalization + fused ReLU) with int8 fake quantization.

    TFLite stores a depthwise kernel as `(1, kh, kw, in * multiplier)` quantized
    along its last axis, so the Keras kernel `(kh, kw, in, multiplier)` is
    reshaped to put all `in * multiplier` output channels last before the
    per-channel fake quant (quantizing along `multiplier` alone would give one
    scale per multiplier instead of per channel).

    Args: as `QuantizedConv2D`, with a `keras.layers.DepthwiseConv2D`.

    Example:

    >>> layer = QuantizedDepthwiseConv2D(keras.layers.DepthwiseConv2D(3, padding="same"))
    >>> layer(tf.ones((1, 5, 5, 2))).shape
    TensorShape([1, 5, 5, 2])
    """

    _wrapped_class = keras.layers.DepthwiseConv2D

    def _quantize_kernel(self, kernel):
        shape = kernel.shape
        flat = tf.reshape(kernel, (shape[0], shape[1], 1, shape[2] * shape[3]))
        flat = fake_quant_weights(flat, channel_axis=-1, num_bits=self.num_bits)
        return tf.reshape(flat, shape)

    def _apply_kernel(self, inputs, kernel):
        strides = self.layer.strides
        return tf.nn.depthwise_conv2d(
            inputs,
            kernel,
            strides=[1, strides[0], strides[1], 1],
            padding=self.layer.padding.upper(),
            dilations=list(self.layer.dilation_rate),
        )


@keras.saving.register_keras_serializable(package="keras_kd")
class QuantizedDense(_QuantizedWeightLayer):
    """A Dense (+ folded BatchNormalization + fused ReLU) with int8 fake quantization.

    The kernel is quantized per tensor (symmetric, narrow range), which is what
    TFLite's int8 FULLY_CONNECTED expects.

    Args: as `QuantizedConv2D`, with a `keras.layers.Dense`.

    Example:

    >>> layer = QuantizedDense(keras.layers.Dense(3))
    >>> layer(tf.ones((2, 4))).shape
    TensorShape([2, 3])
    """

    _wrapped_class = keras.layers.Dense

    def _quantize_kernel(self, kernel):
        return fake_quant_weights(kernel, channel_axis=None, num_bits=self.num_bits)

    def _apply_kernel(self, inputs, kernel):
        if inputs.shape.rank == 2:
            return tf.matmul(inputs, kernel)
        return tf.tensordot(inputs, kernel, [[inputs.shape.rank - 1], [0]])


@keras.saving.register_keras_serializable(package="keras_kd")
class QuantizedOutput(_QuantizedWrapper):
    """Runs a layer, an optional fused ReLU/ReLU6, then fake-quantizes the output.

    For layers whose int8 TFLite kernel has no weights to quantize but gives
    its output its own scale: Add (with a fused ReLU), Concatenate,
    GlobalAveragePooling2D, Softmax (fixed range
    `SOFTMAX_OUTPUT_RANGE`), a standalone ReLU.

    Args: as `QuantizedConv2D`, with any layer and no `batch_norm`.

    Example:

    >>> layer = QuantizedOutput(keras.layers.Add(), activation="relu")
    >>> layer([tf.ones((1, 2)), -tf.ones((1, 2)) * 3]).numpy().tolist()
    [[0.0, 0.0]]
    """

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        if self.output_quantizer is not None and not self.output_quantizer.built:
            self.output_quantizer.build(self.layer.compute_output_shape(input_shape))

    def call(self, inputs, training=None):
        if _takes_training(self.layer):
            outputs = self.layer(inputs, training=training)
        else:
            outputs = self.layer(inputs)
        return self._finish(outputs, training)


def _takes_training(layer):
    return bool(getattr(layer, "_call_has_training_arg", False))
