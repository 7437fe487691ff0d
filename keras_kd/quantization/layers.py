"""Keras 3 layers that simulate TFLite int8 inference during training.

* `FakeQuant`: asymmetric per-tensor activation quantizer whose range is an
  exponential moving average of batch min/max (training) and is used as-is at
  inference. Quantizes model inputs and the outputs of ops that TFLite gives
  their own int8 parameters.
* `QuantizedWeights`: a layer with a kernel (Conv1D/2D, DepthwiseConv2D,
  Conv2DTranspose, Dense, EinsumDense, Embedding; the `KERNELS` table says how
  each is quantized and applied), kept inside for its weights and config, with
  an optional folded BatchNormalization, a fused ReLU/ReLU6 and a `FakeQuant` on
  the output; the kernel is folded and fake-quantized at every call exactly as
  TFLite stores it.
* `QuantizedActivation`: an activation computed the way TFLite runs it in int8,
  every intermediate tensor quantized (see `keras_kd.quantization.activations`).
* `QuantizedAffine`: a per-tensor or per-channel `x * scale + offset` (Rescaling,
  Normalization, a BatchNormalization with nothing to fold into) as TFLite's MUL and ADD.
* `QuantizedOutput`: a layer whose int8 kernel needs only an output quantizer
  (Add, Multiply, Concatenate, pooling), with an optional fused ReLU/ReLU6.

Every range and step counter is a non-trainable weight, so `.keras` files,
checkpoints and `BackupAndRestore` keep them. Fake-quant math is float32 even
when the layer computes in float16 (mixed precision).
"""

import contextlib
import dataclasses
import functools
import threading

import numpy as np

from keras_kd.backend import keras, tf
from keras_kd.quantization.activations import ACTIVATIONS
from keras_kd.quantization.folding import fold_batch_norm
from keras_kd.quantization.quantizers import fake_quant_activations, fake_quant_weights, round_average, weight_bound

__all__ = [
    "FakeQuant",
    "QuantizedWeights",
    "QuantizedActivation",
    "QuantizedAffine",
    "QuantizedOutput",
    "QuantizedAveragePooling",
    "QuantizedResize",
    "QuantizedConstant",
    "QuantizedSubmodel",
    "KernelRule",
    "converting",
    "KERNELS",
    "FUSED_ACTIVATIONS",
]

#: Activations TFLite fuses into Conv/Dense/Add kernels.
FUSED_ACTIVATIONS = tuple(name for name, row in ACTIVATIONS.items() if row.kind in ("identity", "fused"))

_DEFAULT_EMA_DECAY = 0.99
#: The narrowest tracked range: a tensor that is (almost) always 0 would otherwise get a scale
#: near 1e-9, which XNNPACK refuses (it needs input scale * weight scale / output scale < 256).
_DEFAULT_MIN_RANGE = 1e-2


_CONVERTING = threading.local()


@contextlib.contextmanager
def converting():
    """While active, layers that simulate a rounding the int8 kernel does by itself leave it to the kernel.

    `keras_kd.export.to_tflite` traces the model for the converter under it:
    `QuantizedAveragePooling`'s rounding ops would otherwise reach the file
    (as MUL, FLOOR, SIGN ops), where AVERAGE_POOL_2D rounds the same way in
    int8. Converting a quantization-aware model with `tf.lite.TFLiteConverter`
    yourself, create and run the converter under it.

    Example:

    ```python
    with keras_kd.quantization.converting():
        converter = tf.lite.TFLiteConverter.from_keras_model(qat_model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        content = converter.convert()
    ```
    """
    previous = getattr(_CONVERTING, "active", False)
    _CONVERTING.active = True
    try:
        yield
    finally:
        _CONVERTING.active = previous


def _apply_activation(values, activation):
    for function, _ in ACTIVATIONS[activation].stages:
        values = function(values, values)
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
        min_range: a tracked range is never narrower than this (XNNPACK refuses
            the tiny scales of an always-zero tensor).
        **kwargs: standard layer arguments (`name`, `dtype`).

    Example:

    >>> layer = FakeQuant()
    >>> outputs = layer(tf.constant([[-1.0, 0.5, 3.0]]), training=True)
    >>> [round(float(v), 4) for v in (layer.min_value, layer.max_value)]
    [-1.0, 3.0]
    """

    def __init__(
        self,
        num_bits=8,
        ema_decay=_DEFAULT_EMA_DECAY,
        fixed_range=None,
        initial_range=(-6.0, 6.0),
        min_range=_DEFAULT_MIN_RANGE,
        **kwargs,
    ):
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
        if not float(min_range) >= 0.0:
            raise ValueError(f"min_range must be a non-negative float, got {min_range!r}.")
        self.min_range = float(min_range)
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
        low, high = self._floored(low, high)
        return fake_quant_activations(inputs, low, high, num_bits=self.num_bits)

    def _floored(self, low, high):
        if self.fixed_range is None and self.min_range > 0.0:
            high = tf.maximum(high, low + self.min_range)
        return low, high

    def range(self):
        """The stored `(min, max)` as the fake quant uses it and TFLite reads it (with `min_range` applied).

        Example:

        >>> quantizer = FakeQuant(initial_range=(0.0, 1e-6), min_range=0.01)
        >>> _ = quantizer(tf.zeros((1, 4)))
        >>> [round(float(v), 6) for v in quantizer.range()]
        [0.0, 0.01]
        """
        return self._floored(self.min_value, self.max_value)

    def scale(self):
        """The size of one int8 step of the stored range, as TFLite gives the tensor: `(max - min) / 255`.

        Read after this layer's call in a training step, it is the step of the
        range that call used.

        Example:

        >>> quantizer = FakeQuant(initial_range=(0.0, 2.55))
        >>> _ = quantizer(tf.zeros((1, 4)))
        >>> round(float(quantizer.scale()), 6)
        0.01
        """
        low, high = self.range()
        return (high - low) / float(2**self.num_bits - 1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            num_bits=self.num_bits,
            ema_decay=self.ema_decay,
            fixed_range=list(self.fixed_range) if self.fixed_range is not None else None,
            initial_range=list(self.initial_range),
            min_range=self.min_range,
        )
        return config


# --------------------------------------------------------------------------- kernels

class _GraphInput:
    """Where `_range_owner` stopped: an input of the graph being built, whose quantizer is in the caller's graph."""

    __slots__ = ("tensor",)

    def __init__(self, tensor):
        self.tensor = tensor


@functools.lru_cache(maxsize=None)
def _default_registry():
    from keras_kd.quantization.registry import QuantizeRegistry

    return QuantizeRegistry()


def _caller_input(model, node_index, inner_input):
    """The tensor of `model`'s call node `node_index` that feeds its input `inner_input`; None where not told."""
    inputs = keras.tree.flatten(model.inputs)
    nodes = getattr(model, "_inbound_nodes", [])
    if node_index >= len(nodes):
        return None
    given = nodes[node_index].input_tensors
    layer = inner_input._keras_history[0]
    positions = [i for i, tensor in enumerate(inputs) if tensor._keras_history[0] is layer]
    if len(positions) != 1 or len(given) != len(inputs):
        return None
    return given[positions[0]]


def _range_owner(tensor):
    """The `FakeQuant` whose range gives a symbolic `tensor` its int8 scale, or None where it cannot be told.

    Followed back through ops that keep their input's scale (the registry's
    pass-through rules: padding, pooling, reshapes; a mean the converter drops),
    into nested models and out again; a `_GraphInput` where that reaches an
    input of the graph the walk started in.
    """
    from keras_kd.quantization.graph import is_functional

    registry = _default_registry()
    callers = []  # (nested model, its call node) the walk went into from an output
    while True:
        history = getattr(tensor, "_keras_history", None)
        if history is None:
            return None
        operation, node_index, tensor_index = history
        if isinstance(operation, FakeQuant):
            return operation
        if isinstance(operation, _QuantizedWrapper):
            return operation.output_quantizer
        if isinstance(operation, _StagedLayer):
            return operation.quantizers[-1]
        if isinstance(operation, QuantizedAveragePooling):  # keeps its input's scale
            tensor = operation._inbound_nodes[node_index].input_tensors[0]
            continue
        if is_functional(operation):
            callers.append((operation, node_index))
            tensor = keras.tree.flatten(operation.outputs)[tensor_index]
            continue
        if isinstance(operation, keras.layers.InputLayer):
            if not callers:
                return _GraphInput(tensor)
            tensor = _caller_input(*callers.pop(), tensor)
            continue
        nodes = getattr(operation, "_inbound_nodes", [])
        if node_index >= len(nodes) or not nodes[node_index].input_tensors:
            return None
        tensor = nodes[node_index].input_tensors[0]
        if not registry.keeps_input_scale(operation, tensor.shape):
            return None


def _identity(kernel, layer):
    return kernel


def _depthwise_to_channels_last(kernel, layer):
    # TFLite stores a depthwise kernel as (1, kh, kw, in * multiplier) quantized along its last
    # axis: one scale per output channel, not per multiplier.
    shape = kernel.shape
    return tf.reshape(kernel, (*shape[:-2], 1, shape[-2] * shape[-1]))


def _depthwise_from_channels_last(kernel, layer):
    return tf.reshape(kernel, layer.kernel.shape)


def _swap_last_axes(kernel, layer):
    # Conv*Transpose kernels are (..., out, in); TFLite quantizes TRANSPOSE_CONV per output channel.
    rank = len(kernel.shape)
    return tf.transpose(kernel, [*range(rank - 2), rank - 1, rank - 2])


def _as_2d_kernel(kernel, layer):
    # A 1-D kernel (k, in, out) runs as TFLite's CONV_2D kernel (1, k, in, out). Quantizing it in that
    # shape keeps the per-channel axis where the converter expects it (an ExpandDims after the
    # fake quant moves the axis and the converter refuses the reshape).
    return kernel if len(kernel.shape) == 4 else kernel[None]


def _depthwise_1d_to_channels_last(kernel, layer):
    return _depthwise_to_channels_last(_as_2d_kernel(kernel, layer), layer)


def _depthwise_1d_from_channels_last(kernel, layer):
    return tf.reshape(kernel, (1, *layer.kernel.shape))


def _run_as_2d(function, layer, inputs, kernel, **options):
    outputs = function(
        keras.ops.expand_dims(inputs, 1), kernel, strides=(1, layer.strides[0]), data_format="channels_last",
        dilation_rate=(1, layer.dilation_rate[0]), **options,
    )
    return keras.ops.squeeze(outputs, 1)


def _conv_padding(layer, inputs):
    if layer.padding != "causal":
        return inputs, layer.padding
    # Keras pads a causal Conv1D on the left; TFLite runs the same PAD (with the zero point) first.
    left = layer.dilation_rate[0] * (layer.kernel_size[0] - 1)
    return keras.ops.pad(inputs, [[0, 0], [left, 0], [0, 0]]), "valid"


def _apply_conv(layer, inputs, kernel):
    inputs, padding = _conv_padding(layer, inputs)
    if len(layer.kernel_size) == 1:
        return _run_as_2d(keras.ops.conv, layer, inputs, kernel, padding=padding)
    return keras.ops.conv(
        inputs, kernel, strides=layer.strides, padding=padding, data_format="channels_last",
        dilation_rate=layer.dilation_rate,
    )


def _apply_depthwise(layer, inputs, kernel):
    if len(layer.kernel_size) == 1:
        return _run_as_2d(keras.ops.depthwise_conv, layer, inputs, kernel, padding=layer.padding)
    return keras.ops.depthwise_conv(
        inputs, kernel, strides=layer.strides, padding=layer.padding, data_format="channels_last",
        dilation_rate=layer.dilation_rate,
    )


def _apply_conv_transpose(layer, inputs, kernel):
    return keras.ops.conv_transpose(
        inputs, kernel, strides=layer.strides, padding=layer.padding, output_padding=layer.output_padding,
        data_format="channels_last", dilation_rate=layer.dilation_rate,
    )


def _apply_dense(layer, inputs, kernel):
    rank = len(inputs.shape)
    if rank <= 2:
        return keras.ops.matmul(inputs, kernel)
    # On (batch, ..., in), matmul lowers to a Tensordot whose dynamic-shape reshapes the converter
    # leaves in float once the model has trained; the einsum EinsumDense uses converts to int8.
    axes = "abcdefgh"[: rank - 1]
    return keras.ops.einsum(f"{axes}y,yz->{axes}z", inputs, kernel)


def _projection_axes(equation):
    """For 'abc,cde->abde' (the input's last axis into several output axes), the output axes; else None."""
    operands, output = equation.replace(" ", "").split("->")
    source, weights = operands.split(",")
    if weights[0] == source[-1] and output == source[:-1] + weights[1:] and "." not in equation:
        return weights[1:]
    return None


def _apply_einsum(layer, inputs, kernel, bias=None):
    projected = _projection_axes(layer.equation)
    if projected is None or len(projected) < 2:
        outputs = keras.ops.einsum(layer.equation, inputs, kernel)
        return outputs if bias is None else outputs + bias
    # MultiHeadAttention's projections: one FULLY_CONNECTED onto heads * size (bias inside), then a
    # reshape. The converter leaves the einsum's own reshapes and bias ADD in float once trained.
    flat_kernel = keras.ops.reshape(kernel, (kernel.shape[0], -1))
    outputs = _apply_dense(layer, inputs, flat_kernel)
    if bias is not None:
        full = keras.ops.broadcast_to(bias, kernel.shape[1:]) if len(bias.shape) < len(kernel.shape) - 1 else bias
        outputs = outputs + keras.ops.reshape(full, (-1,))
    return keras.ops.reshape(outputs, (-1, *inputs.shape[1:-1], *kernel.shape[1:]))


def _apply_embedding(layer, inputs, kernel):
    if inputs.dtype not in ("int32", "int64"):
        inputs = keras.ops.cast(inputs, "int32")
    return keras.ops.take(kernel, inputs, axis=0)


@dataclasses.dataclass(frozen=True)
class KernelRule:
    """How the kernel of one weight layer type is quantized and applied, as TFLite runs it.

    Attributes:
        kernel_attribute: the layer attribute that holds the kernel.
        per_channel: one scale per output channel (Conv) or one per tensor (Dense).
        to_channels_last / from_channels_last: `(kernel, layer) -> kernel`, the
            layout with output channels on the last axis (where BatchNormalization
            is folded and per-channel scales are taken) and back.
        apply: `(layer, inputs, kernel) -> outputs`, the op without bias or activation
            (`(layer, inputs, kernel, bias)`, bias added, when `adds_bias`).
        tflite_op: the TFLite op it becomes, for the docs.
        adds_bias: `apply` adds the bias itself (where it must go inside the op).
    """

    kernel_attribute: str
    per_channel: bool
    apply: object
    tflite_op: str
    to_channels_last: object = _identity
    from_channels_last: object = _identity
    adds_bias: bool = False


def _kernel_rows():
    layers = keras.layers
    conv = KernelRule("kernel", True, _apply_conv, "CONV_2D")
    # Per tensor: the converter cannot carry a per-channel scale through the kernel transpose it adds.
    transpose = KernelRule(
        "kernel", False, _apply_conv_transpose, "TRANSPOSE_CONV", _swap_last_axes, _swap_last_axes
    )
    depthwise = KernelRule(
        "kernel", True, _apply_depthwise, "DEPTHWISE_CONV_2D", _depthwise_to_channels_last,
        _depthwise_from_channels_last,
    )
    return {
        layers.Conv1D: KernelRule("kernel", True, _apply_conv, "CONV_2D", _as_2d_kernel),
        layers.Conv2D: conv,
        layers.DepthwiseConv1D: KernelRule(
            "kernel", True, _apply_depthwise, "DEPTHWISE_CONV_2D", _depthwise_1d_to_channels_last,
            _depthwise_1d_from_channels_last,
        ),
        layers.DepthwiseConv2D: depthwise,
        layers.Conv1DTranspose: transpose,
        layers.Conv2DTranspose: transpose,
        layers.Dense: KernelRule("kernel", False, _apply_dense, "FULLY_CONNECTED"),
        layers.EinsumDense: KernelRule(
            "kernel", False, _apply_einsum, "FULLY_CONNECTED or BATCH_MATMUL", adds_bias=True
        ),
        layers.Embedding: KernelRule("embeddings", False, _apply_embedding, "GATHER"),
    }


#: Keras weight-layer class -> `KernelRule`.
KERNELS = _kernel_rows()


def kernel_rule(layer):
    """The `KernelRule` of `layer`'s class (or of the nearest built-in class it derives from), or None."""
    for cls in type(layer).__mro__:
        if cls in KERNELS:
            return KERNELS[cls]
    return None


# --------------------------------------------------------------------------- wrappers


class _ReadsInputScale:
    """A layer that, when placed in a Functional graph, finds the `FakeQuant` that sets its input's int8 scale."""

    def __call__(self, *args, **kwargs):
        if args:
            self._note_input_quantizer(args[0])
        return super().__call__(*args, **kwargs)

    def _note_input_quantizer(self, inputs):
        """Keeps the `FakeQuant` whose range gives `inputs` its int8 scale, found in the graph being built.

        Runs whenever the layer is placed in a Functional graph (by
        `quantize_model`, and again when a saved model is loaded or cloned, so
        the link is never serialized and both find the same). Where `inputs`
        comes from an input of that graph (the first layer of a nested model),
        the quantizer is found when the nested model is called in its caller's
        graph (`QuantizedSubmodel`). A layer whose inputs have different
        quantizers (a shared layer or nested model) or whose input no quantizer
        can be told for keeps none: a bias stays float, an average unrounded.
        """
        if not isinstance(inputs, keras.KerasTensor) or getattr(inputs, "_keras_history", None) is None:
            return
        owner = _range_owner(inputs)
        # kept outside Keras' tracking: the quantizer is the layer before's, its weights are that layer's
        if isinstance(owner, _GraphInput):
            found = self.__dict__.setdefault("_graph_inputs", [])
            if not any(owner.tensor is seen for seen in found):
                found.append(owner.tensor)
            return
        owners = self.__dict__.setdefault("_input_quantizers", [])
        if not any(owner is seen for seen in owners):
            owners.append(owner)

    def _link_graph_input(self, graph_input, caller_tensor):
        """Follows `graph_input`, an input of this layer's graph, to `caller_tensor` feeding it in the caller's graph."""
        if any(graph_input is seen for seen in self.__dict__.get("_graph_inputs", [])):
            self._note_input_quantizer(caller_tensor)

    @property
    def input_quantizer(self):
        """The `FakeQuant` that sets this layer's input scale, as found in its graph; None where not one."""
        owners = self.__dict__.get("_input_quantizers", [])
        return owners[0] if len(owners) == 1 else None


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

    def _build_output_quantizer(self, output_shape):
        if self.output_quantizer is not None and not self.output_quantizer.built:
            self.output_quantizer.build(output_shape)

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


@keras.saving.register_keras_serializable(package="keras_kd")
class QuantizedWeights(_ReadsInputScale, _QuantizedWrapper):
    """A weight layer (+ folded BatchNormalization + fused ReLU) with int8 fake quantization.

    The kernel is folded and fake-quantized at every call as TFLite stores it:
    symmetric, narrow range, per output channel for convolutions and per tensor
    for Dense, EinsumDense and Embedding (the layer's `KernelRule` in `KERNELS`;
    `per_channel=False` makes a convolution's kernel one scale too).
    The bias is added on the int32 grid the converter stores it on (steps of
    the input's scale times the weight's), read from the `FakeQuant` that sets
    the input's scale (`input_quantizer`, found when the layer is placed in a
    Functional graph). The output is fake-quantized per tensor with a
    moving-average range, unless `quantize_output=False` (a following
    Concatenate sets the scale; an Embedding's GATHER keeps its table's scale).

    Args:
        layer: the Keras layer to wrap (a class in `KERNELS` or a subclass); its
            own activation must be linear (pass a fused one here).
        batch_norm: a `keras.layers.BatchNormalization` to fold, or `None`.
        per_channel: None (the kernel rule's choice), or False for one scale
            over the whole kernel of a convolution. The file is smaller (each
            output channel of a per-channel kernel stores two float32 scales
            and two int64 zero points, for the kernel and its bias), and the
            channels with small weights lose precision. True only where the
            rule is per channel: TFLite's FULLY_CONNECTED, GATHER and
            TRANSPOSE_CONV kernels here take one scale.
        activation: "linear", "relu" or "relu6", applied after the bias.
        quantize_output: put a `FakeQuant` on the output.
        num_bits, ema_decay: quantizer settings.
        output_range: fixed output range instead of a tracked one.
        fused_layers: names of the original layers this one replaces.

    Example:

    >>> layer = QuantizedWeights(keras.layers.Conv2D(4, 3, name="conv"), activation="relu")
    >>> layer(tf.ones((1, 5, 5, 2))).shape
    TensorShape([1, 3, 3, 4])
    """

    def __init__(self, layer, batch_norm=None, per_channel=None, **kwargs):
        layer = _as_layer(layer, "layer")
        self.kernel_rule = kernel_rule(layer)
        if self.kernel_rule is None:
            raise TypeError(
                f"QuantizedWeights wraps a layer with a kernel rule ({', '.join(c.__name__ for c in KERNELS)}), "
                f"got {type(layer).__name__} ({layer.name!r})."
            )
        if per_channel not in (None, True, False):
            raise ValueError(f"per_channel must be None, True or False, got {per_channel!r}.")
        if per_channel and not self.kernel_rule.per_channel:
            raise ValueError(
                f"per_channel=True for {type(layer).__name__} ({layer.name!r}): its TFLite kernel "
                f"({self.kernel_rule.tflite_op}) takes one scale for the whole kernel here. Pass per_channel=None."
            )
        super().__init__(layer, **kwargs)
        self.batch_norm = _as_layer(batch_norm, "batch_norm")
        self.per_channel = self.kernel_rule.per_channel if per_channel is None else bool(per_channel)

    def build(self, input_shape):
        # Inner layers deserialized from a `.keras` file arrive already built.
        if not self.layer.built:
            self.layer.build(input_shape)
        output_shape = self.layer.compute_output_shape(input_shape)
        if self.batch_norm is not None and not self.batch_norm.built:
            self.batch_norm.build(output_shape)
        self._build_output_quantizer(output_shape)

    @property
    def _kernel(self):
        return getattr(self.layer, self.kernel_rule.kernel_attribute)

    def _bias_on_grid(self, kernel, bias):
        """`bias` rounded to the int32 grid TFLite stores it on: steps of input scale times weight scale.

        The converter stores the bias as `round(bias / (s_in * s_w))` at that
        scale; the Keras model adds the same value, so the file's accumulator
        is the Keras model's (gradients pass straight through the rounding).
        The grid is computed in float32, the converter's in float64: a bias
        within float32's precision of a tie (measured: 0.75 % of the channels
        of a MobileNetV3Large) lands one int32 step away, about a thousandth of
        an output step. Without a known input quantizer, the float bias is used.
        """
        quantizer = self.input_quantizer
        if bias is None or quantizer is None or not quantizer.built:
            return bias
        bound = weight_bound(kernel, per_channel=self.per_channel)
        step = tf.stop_gradient(quantizer.scale() * bound / float(2 ** (self.num_bits - 1) - 1))
        return bias + tf.stop_gradient(tf.round(bias / step) * step - bias)

    def folded_kernel_and_bias(self):
        """The kernel (output channels last) and bias TFLite will store, BN folded, float32."""
        kernel = self.kernel_rule.to_channels_last(tf.cast(self._kernel, tf.float32), self.layer)
        bias = getattr(self.layer, "bias", None)
        if self.batch_norm is None:
            return kernel, (None if bias is None else tf.cast(bias, tf.float32))
        bn = self.batch_norm
        return fold_batch_norm(
            kernel,
            bias,
            gamma=bn.gamma if bn.scale else None,
            beta=bn.beta if bn.center else None,
            moving_mean=bn.moving_mean,
            moving_variance=bn.moving_variance,
            epsilon=bn.epsilon,
        )

    def _quantize(self, kernel):
        rule = self.kernel_rule
        if self.per_channel:
            return rule.from_channels_last(fake_quant_weights(kernel, channel_axis=-1, num_bits=self.num_bits), self.layer)
        # per tensor: restore the layout first, so the fake quant is the last op on the constant
        # (the converter refuses a transpose of a quantized kernel)
        return fake_quant_weights(rule.from_channels_last(kernel, self.layer), num_bits=self.num_bits)

    def quantized_kernel(self):
        """The folded kernel after int8 fake quantization, in the layout the op reads, float32."""
        return self._quantize(self.folded_kernel_and_bias()[0])

    def call(self, inputs, training=None):
        kernel, bias = self.folded_kernel_and_bias()
        bias = self._bias_on_grid(kernel, bias)
        kernel = self._quantize(kernel)
        kernel = tf.cast(kernel, self.compute_dtype)
        bias = None if bias is None else tf.cast(bias, self.compute_dtype)
        if self.kernel_rule.adds_bias:
            outputs = self.kernel_rule.apply(self.layer, inputs, kernel, bias)
        else:
            outputs = self.kernel_rule.apply(self.layer, inputs, kernel)
            if bias is not None:
                outputs = outputs + bias
        return self._finish(outputs, training)

    def get_config(self):
        config = super().get_config()
        config["batch_norm"] = (
            keras.saving.serialize_keras_object(self.batch_norm) if self.batch_norm is not None else None
        )
        config["per_channel"] = self.per_channel
        return config


@keras.saving.register_keras_serializable(package="keras_kd")
class QuantizedOutput(_QuantizedWrapper):
    """Runs a layer, an optional fused ReLU/ReLU6, then fake-quantizes the output.

    For layers whose int8 TFLite kernel has no weights to quantize but gives
    its output its own scale: Add, Subtract, Multiply (with a fused ReLU),
    Concatenate, GlobalAveragePooling, a layer with a fixed output range.

    Args: as `QuantizedWeights`, with any layer and no `batch_norm`.

    Example:

    >>> layer = QuantizedOutput(keras.layers.Add(), activation="relu")
    >>> layer([tf.ones((1, 2)), -tf.ones((1, 2)) * 3]).numpy().tolist()
    [[0.0, 0.0]]
    """

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        self._build_output_quantizer(self.layer.compute_output_shape(input_shape))

    def call(self, inputs, training=None):
        if _takes_training(self.layer):
            outputs = self.layer(inputs, training=training)
        else:
            outputs = self.layer(inputs)
        return self._finish(outputs, training)


@keras.saving.register_keras_serializable(package="keras_kd")
class QuantizedAveragePooling(_ReadsInputScale, keras.layers.Layer):
    """An AveragePooling layer whose averages are rounded to its input's int8 grid, as TFLite's kernel rounds them.

    TFLite's int8 AVERAGE_POOL_2D keeps its input's scale, so it gets no
    quantizer of its own, but it rounds each average back to that grid (half
    away from zero, `quantizers.round_average`); a float average between two
    steps is not what the next layer reads in the file. The grid is the one
    of the `FakeQuant` that sets the input's scale (`input_quantizer`, found
    when the layer is placed in a Functional graph); without one the float
    average is returned. Traced for the converter (`converting`), the layer
    is the plain pooling, which the converter makes AVERAGE_POOL_2D.

    Args:
        layer: the AveragePooling1D/2D layer (or its config).
        ties: how a value halfway between two steps is rounded (see
            `quantizers.round_average`): "away" from zero, as AVERAGE_POOL_2D.
        **kwargs: standard layer arguments (`name`).

    Example:

    >>> inputs = keras.Input((4, 1))
    >>> quantizer = FakeQuant(initial_range=(0.0, 2.55))  # steps of 0.01
    >>> pooled = QuantizedAveragePooling(keras.layers.AveragePooling1D(2))(quantizer(inputs))
    >>> model = keras.Model(inputs, pooled)
    >>> [round(float(v), 4) for v in model(tf.constant([[[0.01], [0.02], [0.03], [0.04]]])).numpy().ravel()]
    [0.01, 0.03]
    """

    #: The rounding of the TFLite kernel this layer stands for, when not passed.
    default_ties = "away"

    def __init__(self, layer, ties=None, **kwargs):
        layer = _as_layer(layer, "layer")
        ties = self.default_ties if ties is None else ties
        if ties not in ("away", "up"):
            raise ValueError(f"{type(self).__name__}: ties must be 'away' or 'up', got {ties!r}.")
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(**kwargs)
        self.layer = layer
        self.ties = ties

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)

    def call(self, inputs):
        outputs = self.layer(inputs)
        quantizer = self.input_quantizer
        if quantizer is None or not quantizer.built or getattr(_CONVERTING, "active", False):
            return outputs
        low, high = quantizer.range()
        return round_average(outputs, low, high, num_bits=quantizer.num_bits, ties=self.ties)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)  # the inner layer carries the dtype policy
        config["layer"] = keras.saving.serialize_keras_object(self.layer)
        config["ties"] = self.ties
        return config


@keras.saving.register_keras_serializable(package="keras_kd")
class QuantizedResize(QuantizedAveragePooling):
    """A bilinear UpSampling2D or Resizing whose outputs are rounded to its input's int8 grid, as XNNPACK rounds them.

    TFLite's int8 RESIZE_BILINEAR keeps its input's scale; each output is a
    weighted average of four input pixels, rounded back to that grid. On
    XNNPACK, TFLite's default CPU kernels, a value halfway between two steps
    goes up (measured: every value of a 2x upsampling); TFLite's builtin
    kernels round it away from zero and compute the weights in 10-bit fixed
    point, so they differ from XNNPACK by a step on a few values. The Keras
    model follows XNNPACK (`ties="up"`), as a phone runs the file. Otherwise
    as `QuantizedAveragePooling`.

    Args:
        layer: the UpSampling2D or Resizing layer, with bilinear interpolation.
        ties: "up" (XNNPACK, the default) or "away" (the builtin kernels).
        **kwargs: standard layer arguments (`name`).

    Example:

    >>> inputs = keras.Input((2, 1, 1))
    >>> quantizer = FakeQuant(initial_range=(0.0, 2.55))  # steps of 0.01
    >>> resize = QuantizedResize(keras.layers.UpSampling2D((2, 1), interpolation="bilinear"))
    >>> model = keras.Model(inputs, resize(quantizer(inputs)))
    >>> [round(float(v), 4) for v in model(tf.constant([[[[0.0]], [[0.02]]]])).numpy().ravel()]
    [0.0, 0.01, 0.02, 0.02]
    """

    default_ties = "up"


@keras.saving.register_keras_serializable(package="keras_kd")
class QuantizedConstant(keras.layers.Layer):
    """A float constant operand of an int8 ADD, SUB or MUL, as the converter quantizes it.

    A float array written into the graph (`x + table`, a position embedding
    computed once) becomes an int8 constant in the file, quantized per tensor
    over `[min(table, 0), max(table, 0)]` (measured); added as a float it is
    up to half a step off that. `quantize_model` replaces such constants by
    this layer, which holds the array as a non-trainable weight and returns it
    fake-quantized over that range (the converter folds both into the same
    int8 constant). Its input only places it in the graph.

    Args:
        value: the constant (array-like).
        num_bits: bit width, 8 for TFLite int8.
        **kwargs: standard layer arguments (`name`).

    Example:

    >>> table = QuantizedConstant([0.1, -0.2, 0.3337])
    >>> np.round(table(tf.zeros((1, 3))).numpy() / (0.5337 / 255), 2).tolist()  # whole steps of the range
    [48.0, -96.0, 159.0]
    """

    def __init__(self, value, num_bits=8, **kwargs):
        super().__init__(**kwargs)
        self._initial = np.asarray(value, np.float32)
        self.num_bits = int(num_bits)

    def build(self, input_shape):
        self.value = self.add_weight(
            name="value",
            shape=self._initial.shape,
            dtype="float32",
            initializer=keras.initializers.Constant(self._initial),
            trainable=False,
            autocast=False,
        )

    def call(self, inputs):
        value = tf.convert_to_tensor(self.value)
        low = tf.minimum(tf.reduce_min(value), 0.0)
        high = tf.maximum(tf.reduce_max(value), 0.0)
        return tf.cast(fake_quant_activations(value, low, high, num_bits=self.num_bits), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return self._initial.shape

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(self._initial.shape, dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(value=self._initial.tolist(), num_bits=self.num_bits)
        return config


def _takes_training(layer):
    return bool(getattr(layer, "_call_has_training_arg", False))


class _StagedLayer(keras.layers.Layer):
    """Runs `stages` (function, fixed range) in order, fake-quantizing each stage's output."""

    def __init__(self, num_bits=8, ema_decay=_DEFAULT_EMA_DECAY, **kwargs):
        super().__init__(**kwargs)
        self.num_bits = int(num_bits)
        self.ema_decay = float(ema_decay)
        self.quantizers = [
            FakeQuant(num_bits=num_bits, ema_decay=ema_decay, fixed_range=fixed, name=f"stage_{index}")
            for index, (_, fixed) in enumerate(self._stages())
        ]

    def build(self, input_shape):
        for quantizer in self.quantizers:
            if not quantizer.built:
                quantizer.build(input_shape)

    def call(self, inputs, training=None):
        values = inputs
        for (function, _), quantizer in zip(self._stages(), self.quantizers):
            values = quantizer(function(inputs, values), training=training)
        return values

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(num_bits=self.num_bits, ema_decay=self.ema_decay)
        return config


@keras.saving.register_keras_serializable(package="keras_kd")
class QuantizedActivation(_StagedLayer):
    """An activation as TFLite computes it in int8, each intermediate tensor fake-quantized.

    The stages and fixed ranges come from the activation table
    (`keras_kd.quantization.activations.ACTIVATIONS`): swish is a LOGISTIC at
    TFLite's fixed 1/256 scale then a MUL; sigmoid is fixed at [0, 255/256]; and so on.
    Its input is expected to be quantized already.

    Args:
        activation: a name in `ACTIVATIONS` ("hard_silu", "silu", "sigmoid", ...).
        num_bits, ema_decay: quantizer settings.

    Example:

    >>> layer = QuantizedActivation("sigmoid")
    >>> float(layer(tf.constant([[100.0]]))[0, 0])
    0.99609375
    """

    def __init__(self, activation, num_bits=8, ema_decay=_DEFAULT_EMA_DECAY, **kwargs):
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)} (the quantization activation table), got "
                f"{activation!r}."
            )
        self.activation = activation
        super().__init__(num_bits=num_bits, ema_decay=ema_decay, **kwargs)

    def _stages(self):
        return ACTIVATIONS[self.activation].stages

    def get_config(self):
        config = super().get_config()
        config["activation"] = self.activation
        return config


@keras.saving.register_keras_serializable(package="keras_kd")
class QuantizedAffine(_StagedLayer):
    """`x * scale + offset`, per tensor or per channel (last axis), as TFLite's int8 MUL then ADD.

    What Rescaling and Normalization compute, and a BatchNormalization with no
    kernel before it to fold into (its moving statistics, frozen). A stage that
    does nothing (scale 1, offset 0) is left out.

    Args:
        scale: a float or a per-channel list.
        offset: a float or a per-channel list.
        num_bits, ema_decay: quantizer settings.

    Example:

    >>> layer = QuantizedAffine(scale=1 / 127.5, offset=-1.0)
    >>> np.round(layer(tf.constant([[0.0, 127.5, 255.0]])).numpy(), 2)  # int8 steps over [-1, 1]
    array([[-0.99,  0.  ,  0.99]], dtype=float32)
    """

    def __init__(self, scale=1.0, offset=0.0, num_bits=8, ema_decay=_DEFAULT_EMA_DECAY, **kwargs):
        self.scale = np.asarray(scale, np.float32)
        self.offset = np.asarray(offset, np.float32)
        super().__init__(num_bits=num_bits, ema_decay=ema_decay, **kwargs)

    def _stages(self):
        stages = []
        if not np.all(self.scale == 1.0):
            stages.append((lambda inputs, values: values * tf.cast(self.scale, values.dtype), None))
        if not np.all(self.offset == 0.0) or not stages:
            stages.append((lambda inputs, values: values + tf.cast(self.offset, values.dtype), None))
        return stages

    def get_config(self):
        config = super().get_config()
        config.update(scale=self.scale.tolist(), offset=self.offset.tolist())
        return config


@keras.saving.register_keras_serializable(package="keras_kd")
class QuantizedSubmodel(keras.Model):
    """A nested Functional model inside a `quantize_model` result, linked to the graph that calls it.

    The first weight layers of a nested model read a tensor quantized in the
    caller's graph, which they never see (Keras computes a nested model's
    output shapes without calling its layers). When the model is called on
    symbolic tensors (by `quantize_model`, and again when the outer model is
    loaded or cloned), each layer inside it that reads one of its inputs and
    needs that input's scale (`QuantizedWeights`, `QuantizedAveragePooling`)
    finds the caller's quantizer (`input_quantizer`), so a bias lands on the
    int32 grid the file stores and an average is rounded to its input's grid.
    Otherwise a plain Functional model: same config, weights and outputs.

    Example:

    >>> inputs = keras.Input((4,))
    >>> inner = keras.Input((4,))
    >>> block = QuantizedSubmodel(inner, QuantizedWeights(keras.layers.Dense(2))(inner))
    >>> quantizer = FakeQuant(name="inputs_quant")
    >>> outer = keras.Model(inputs, block(quantizer(inputs)))
    >>> block.layers[-1].input_quantizer is quantizer
    True
    """

    def __call__(self, *args, **kwargs):
        outputs = super().__call__(*args, **kwargs)
        given = keras.tree.flatten(args[0]) if args else []
        if any(isinstance(tensor, keras.KerasTensor) for tensor in given):  # placed in a graph, not run
            inner = keras.tree.flatten(self.inputs)
            if len(inner) == len(given):
                from keras_kd.quantization.graph import all_layers

                for layer in all_layers(self):
                    if isinstance(layer, _ReadsInputScale):
                        for graph_input, tensor in zip(inner, given):
                            layer._link_graph_input(graph_input, tensor)
        return outputs
