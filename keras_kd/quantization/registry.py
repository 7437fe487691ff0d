"""The quantization registry: one rule per layer (or keras.ops operation) type.

A `QuantizeRule` says what `quantize_model` does with one type, by its *role*:

* ``weights``: a kernel quantized as TFLite stores it (`QuantizedWeights`; the
  `KernelRule` in `keras_kd.quantization.layers.KERNELS` says how), a following
  BatchNormalization folded and a following ReLU/ReLU6 fused.
* ``output``: no weights, but TFLite gives the output its own int8 scale (ADD,
  MUL, CONCATENATION, MEAN), fixed where TFLite fixes it (`output_range`).
* ``activation``: an activation, quantized as the activation table says
  (`keras_kd.quantization.activations`).
* ``affine``: `x * scale + offset` per tensor or channel (Rescaling, Normalization,
  a BatchNormalization with nothing to fold into), as int8 MUL and ADD.
* ``passthrough``: the int8 op keeps its input's scale (pooling, padding,
  reshapes, resizes); no quantizer.
* ``rewrite``: replaced before quantizers are placed by layers that have rules
  (SeparableConv2D into DepthwiseConv2D + 1x1 Conv2D, as TFLite runs it).
* ``trace``: a subclassed layer whose `call` is made of supported parts is
  traced into a small Functional model, which is then quantized like any other.

Users add rows for their own layers by passing rules to `quantize_model`
(`rules=[QuantizeRule(MyBlock, "trace")]`), never by editing this table.
`supported_layer_types`, `float_layers`, the errors and the conformance test
(`tests/test_quantization_registry.py`) are derived from it.
"""

import dataclasses

from keras_kd.backend import keras
from keras_kd.quantization.activations import ACTIVATIONS, LOGISTIC_OUTPUT_RANGE, activation_rule

__all__ = ["QuantizeRule", "QuantizeRegistry", "ROLES", "default_rules", "supported_layer_types"]

ROLES = ("weights", "output", "activation", "affine", "passthrough", "rewrite", "trace")


@dataclasses.dataclass(frozen=True)
class QuantizeRule:
    """How `quantize_model` handles one layer (or keras.ops operation) type.

    Attributes:
        layer_type: the class, matched exactly (a subclass needs its own rule).
        role: one of `ROLES` (see the module docstring).
        output_range: a fixed `(min, max)` output range where TFLite fixes one
            (role "output"); None tracks the range while training.
        fuses_activation: a following ReLU/ReLU6 is fused into this op, as TFLite
            fuses it into CONV_2D, FULLY_CONNECTED, ADD, SUB and MUL.
        check: optional `layer -> str or None`: why this particular layer cannot
            be quantized (a configuration TFLite has no int8 kernel for), or None.
        activation: role "activation": `layer -> activation name` in the table.
        affine: role "affine": `layer -> (scale, offset)`, floats or per-channel arrays.
        rewrite: role "rewrite": `(layer, args, kwargs, names) -> outputs`, the
            float replacement built from the new input tensors (`names(name)`
            gives a unique layer name); it copies the weights it needs.
        quantizes_constants: role "output": float arrays written into the graph
            as operands (`x + table`) are int8 constants in the file, quantized
            over their own range; they are replaced by `QuantizedConstant`.
        rounds_average: role "passthrough": the int8 op averages its inputs and
            rounds the average back to the input's grid. True or "away": half
            away from zero (AVERAGE_POOL_2D), "up": half up (RESIZE_BILINEAR on
            XNNPACK), or `layer -> one of those, or None` where it depends on
            the layer (a bilinear resize rounds, a nearest one copies). The
            layer is wrapped in `QuantizedAveragePooling` (`QuantizedResize`
            for UpSampling2D and Resizing), which rounds alike.
        tflite_ops: the TFLite ops it becomes (for the docs).

    Example:

    ```python
    class Scale(keras.layers.Layer):              # a block made of supported parts
        def call(self, x):
            return keras.ops.multiply(x, 0.5)

    qat = quantize_model(model, rules=[QuantizeRule(Scale, "trace")])
    ```
    """

    layer_type: type
    role: str
    output_range: tuple = None
    fuses_activation: bool = False
    check: object = None
    activation: object = None
    affine: object = None
    rewrite: object = None
    quantizes_constants: bool = False
    rounds_average: object = False
    tflite_ops: str = ""

    def __post_init__(self):
        if not isinstance(self.layer_type, type):
            raise TypeError(
                f"QuantizeRule.layer_type must be a class (a keras Layer or keras.ops Operation subclass), got "
                f"{self.layer_type!r}."
            )
        if self.role not in ROLES:
            raise ValueError(f"QuantizeRule.role must be one of {ROLES}, got {self.role!r} for {self.layer_type.__name__}.")
        if self.role == "activation" and self.activation is None:
            raise ValueError(f"An 'activation' rule needs activation=(layer -> name); {self.layer_type.__name__} has none.")
        if self.role == "rewrite" and self.rewrite is None:
            raise ValueError(f"A 'rewrite' rule needs rewrite=(layer, args, kwargs, names) -> outputs; "
                             f"{self.layer_type.__name__} has none.")
        if not (self.rounds_average in (False, True, "away", "up") or callable(self.rounds_average)):
            raise ValueError(
                f"QuantizeRule.rounds_average must be False, True, 'away', 'up' or a callable (layer -> one of "
                f"those), got {self.rounds_average!r} for {self.layer_type.__name__}."
            )
        if self.role == "affine" and self.affine is None:
            raise ValueError(f"An 'affine' rule needs affine=(layer -> (scale, offset)); {self.layer_type.__name__} has none.")

    def reason(self, layer):
        """Why `layer` cannot be quantized under this rule, or None."""
        return self.check(layer) if self.check is not None else None

    def rounding(self, layer):
        """How the int8 op of `layer` rounds what it averages: "away", "up", or None (it does not round).

        >>> bilinear, nearest = keras.layers.UpSampling2D(interpolation="bilinear"), keras.layers.UpSampling2D()
        >>> rule = QuantizeRegistry().rule_for(bilinear)
        >>> rule.rounding(bilinear), rule.rounding(nearest)
        ('up', None)
        """
        found = self.rounds_average(layer) if callable(self.rounds_average) else self.rounds_average
        return "away" if found is True else (found or None)


# --------------------------------------------------------------------------- checks


def _bilinear_rounds(layer):
    return "up" if getattr(layer, "interpolation", "nearest") == "bilinear" else None


def _resize_check(layer):
    found = _channels_last(layer)
    # TFLite has no builtin op for these in any precision: in float they would need the Flex delegate
    if found is None and getattr(layer, "interpolation", "nearest") not in ("nearest", "bilinear"):
        found = (f"interpolation={layer.interpolation!r}: TFLite's resize ops are 'nearest' and 'bilinear' only "
                 "(in float too, other modes need the Flex delegate); use one of those")
    if found is None and getattr(layer, "antialias", False):
        found = "antialias=True: TFLite has no antialiased resize op (in float either); pass antialias=False"
    if found is None and getattr(layer, "pad_to_aspect_ratio", False):
        found = ("pad_to_aspect_ratio=True: the padding becomes float FILL and MUL ops; pad the images before the "
                 "model, or use crop_to_aspect_ratio")
    return found


def _channels_last(layer):
    data_format = getattr(layer, "data_format", "channels_last")
    return None if data_format == "channels_last" else "data_format must be 'channels_last' (TFLite is NHWC)"


def _weights_check(layer):
    reason = _channels_last(layer)
    if reason:
        return reason
    if getattr(layer, "groups", 1) != 1:
        return "grouped convolution (groups > 1) has no TFLite int8 kernel"
    if hasattr(layer, "activation") and activation_rule(layer.activation) is None:
        return f"activation {getattr(layer.activation, '__name__', layer.activation)!r} is not in the activation table"
    return None


def _relu_layer_activation(layer):
    if float(layer.threshold) != 0.0:
        return None
    if float(layer.negative_slope) != 0.0:
        return "leaky_relu" if layer.max_value is None else None
    if layer.max_value is None:
        return "relu"
    return "relu6" if float(layer.max_value) == 6.0 else None


def _activation_layer_name(layer):
    rule = activation_rule(layer.activation)
    return rule.name if rule is not None else None


def _activation_check(name_of):
    def check(layer):
        if name_of(layer) is None:
            what = getattr(getattr(layer, "activation", None), "__name__", None) or type(layer).__name__
            return (
                f"activation {what!r} has no int8 form in the activation table "
                f"({', '.join(sorted(ACTIVATIONS))})"
            )
        return None

    return check


def _softmax_check(layer):
    axis = layer.axis if not isinstance(layer.axis, (list, tuple)) else list(layer.axis)
    return None if axis in (-1, [-1]) else "only a softmax over the last axis has an int8 TFLite kernel"


def _rescaling_affine(layer):
    return layer.scale, layer.offset


def _normalization_affine(layer):
    import numpy as np

    mean = np.asarray(keras.ops.convert_to_numpy(layer.mean), np.float32).reshape(-1)
    std = np.maximum(np.sqrt(np.asarray(keras.ops.convert_to_numpy(layer.variance), np.float32)), keras.config.epsilon())
    std = std.reshape(-1)
    return 1.0 / std, -mean / std


def _normalization_check(layer):
    if layer.invert:
        return "Normalization(invert=True) is not supported; quantize the model without it"
    axis = layer.axis
    if axis not in ((-1,), -1, None) and tuple(axis) != (len(layer.input.shape) - 1,):
        return "only a Normalization over the last (channel) axis is supported"
    return None


def _batch_norm_affine(layer):
    import numpy as np

    from keras_kd.quantization.folding import batch_norm_factors

    factor, shift = batch_norm_factors(
        layer.gamma if layer.scale else None,
        layer.beta if layer.center else None,
        layer.moving_mean,
        layer.moving_variance,
        layer.epsilon,
    )
    return np.asarray(factor), np.asarray(shift)


def _last_axis_check(layer):
    rank = getattr(layer.input_spec, "ndim", None)
    if layer.axis == -1 or (rank is not None and layer.axis == rank - 1):
        return None
    return "only a BatchNormalization over the last (channel) axis is supported"


def _ops_activation(name):
    return lambda operation: name


def _op_softmax_check(operation):
    return None if getattr(operation, "axis", -1) in (-1, None) else "only a softmax over the last axis is supported"


# --------------------------------------------------------------------------- the default table


def default_rules():
    """The built-in rules, one per type (a fresh list; `QuantizeRegistry` reads it)."""
    layers = keras.layers
    from keras.src.ops import nn as nn_ops
    from keras.src.ops import numpy as np_ops

    rules = []

    def add(types, role, **kwargs):
        for layer_type in types:
            rules.append(QuantizeRule(layer_type, role, **kwargs))

    from keras_kd.quantization.layers import KERNELS

    for layer_type, kernel in KERNELS.items():
        rules.append(
            QuantizeRule(layer_type, "weights", fuses_activation=True, check=_weights_check, tflite_ops=kernel.tflite_op)
        )
    add((layers.Add, layers.Subtract, layers.Multiply), "output", fuses_activation=True, quantizes_constants=True,
        tflite_ops="ADD / SUB / MUL")
    add((layers.Concatenate,), "output", tflite_ops="CONCATENATION")
    add((layers.PReLU,), "output", tflite_ops="PRELU")
    add(
        (layers.GlobalAveragePooling1D, layers.GlobalAveragePooling2D),
        "output",
        check=_channels_last,
        tflite_ops="MEAN",
    )
    add((layers.Softmax,), "output", output_range=LOGISTIC_OUTPUT_RANGE, check=_softmax_check, tflite_ops="SOFTMAX")
    add(
        (layers.Activation,),
        "activation",
        activation=_activation_layer_name,
        check=_activation_check(_activation_layer_name),
        tflite_ops="per the activation table",
    )
    add(
        (layers.ReLU,),
        "activation",
        activation=_relu_layer_activation,
        check=_activation_check(_relu_layer_activation),
        tflite_ops="RELU / RELU6 / LEAKY_RELU, or fused",
    )
    add((layers.LeakyReLU,), "activation", activation=lambda layer: "leaky_relu", tflite_ops="LEAKY_RELU")
    add((layers.Rescaling,), "affine", affine=_rescaling_affine, tflite_ops="MUL, ADD")
    add((layers.Normalization,), "affine", affine=_normalization_affine, check=_normalization_check, tflite_ops="MUL, ADD")
    add(
        (layers.BatchNormalization,),
        "affine",
        affine=_batch_norm_affine,
        check=_last_axis_check,
        tflite_ops="folded into the kernel before it, else MUL, ADD",
    )
    add(
        (
            layers.InputLayer,
            layers.MaxPooling1D,
            layers.MaxPooling2D,
            layers.GlobalMaxPooling1D,
            layers.GlobalMaxPooling2D,
            layers.ZeroPadding1D,
            layers.ZeroPadding2D,
            layers.Cropping1D,
            layers.Cropping2D,
            layers.UpSampling1D,
            layers.Reshape,
            layers.Flatten,
            layers.Permute,
            layers.Dropout,
            layers.SpatialDropout1D,
            layers.SpatialDropout2D,
            layers.GaussianNoise,
            layers.GaussianDropout,
            layers.AlphaDropout,
            layers.Identity,
        ),
        "passthrough",
        check=_channels_last,
        tflite_ops="keeps its input's scale (MAX_POOL_2D, PAD, RESHAPE, ...)",
    )
    add(
        (layers.AveragePooling1D, layers.AveragePooling2D),
        "passthrough",
        check=_channels_last,
        rounds_average=True,
        tflite_ops="AVERAGE_POOL_2D (keeps its input's scale, rounds the average to it)",
    )
    add(
        (layers.UpSampling2D, layers.Resizing),
        "passthrough",
        check=_resize_check,
        rounds_average=_bilinear_rounds,
        tflite_ops="RESIZE_NEAREST_NEIGHBOR, or RESIZE_BILINEAR (keeps its input's scale, rounds to it)",
    )
    from keras_kd.quantization import rewrites

    add((layers.SeparableConv1D, layers.SeparableConv2D), "rewrite", check=_weights_check,
        rewrite=rewrites.split_separable, tflite_ops="DEPTHWISE_CONV_2D + CONV_2D")
    add((layers.LayerNormalization,), "rewrite", check=rewrites.layer_norm_check, rewrite=rewrites.layer_norm_ops,
        tflite_ops="MEAN, SUB, MUL, RSQRT, ADD")
    add((nn_ops.DotProductAttention,), "rewrite", rewrite=rewrites.attention_ops,
        tflite_ops="BATCH_MATMUL, SOFTMAX, BATCH_MATMUL")
    add((layers.MultiHeadAttention,), "trace", tflite_ops="FULLY_CONNECTED / BATCH_MATMUL, SOFTMAX")
    # keras.ops operations recorded in a Functional graph (`x + 3`, `keras.ops.multiply(x, y)`).
    add((np_ops.Add, np_ops.Subtract, np_ops.Multiply), "output", quantizes_constants=True, tflite_ops="ADD / SUB / MUL")
    add((np_ops.Concatenate, np_ops.Mean, np_ops.Einsum, np_ops.Matmul), "output",
        tflite_ops="CONCATENATION / MEAN / BATCH_MATMUL")
    from keras.src.ops import math as math_ops

    add((math_ops.Rsqrt,), "output", tflite_ops="RSQRT")
    add((np_ops.Reshape, np_ops.Transpose, np_ops.ExpandDims, np_ops.Squeeze, np_ops.Max), "passthrough",
        tflite_ops="RESHAPE / TRANSPOSE / REDUCE_MAX")
    for operation, name in (
        (nn_ops.Relu, "relu"),
        (nn_ops.Relu6, "relu6"),
        (nn_ops.Sigmoid, "sigmoid"),
        (nn_ops.HardSigmoid, "hard_sigmoid"),
        (nn_ops.HardSilu, "hard_silu"),
        (nn_ops.Silu, "silu"),
        (nn_ops.Gelu, "gelu"),
    ):
        add((operation,), "activation", activation=_ops_activation(name), tflite_ops=ACTIVATIONS[name].tflite_ops)
    add((nn_ops.Softmax,), "activation", activation=_ops_activation("softmax"), check=_op_softmax_check,
        tflite_ops="SOFTMAX")
    return rules


class QuantizeRegistry:
    """The rules `quantize_model` uses: the defaults, with the user's rules on top.

    Args:
        rules: extra `QuantizeRule`s; a user rule for a type replaces the default one.

    Example:

    >>> registry = QuantizeRegistry()
    >>> registry.rule_for(keras.layers.Conv2D(4, 3)).role
    'weights'
    """

    def __init__(self, rules=()):
        rules = list(rules or ())
        for rule in rules:
            if not isinstance(rule, QuantizeRule):
                raise TypeError(
                    f"rules must be QuantizeRule objects, got {type(rule).__name__} ({rule!r}). Write "
                    "QuantizeRule(MyLayer, 'trace') (or 'output', 'passthrough', ...)."
                )
        self.rules = {rule.layer_type: rule for rule in default_rules()}
        self.user_types = {rule.layer_type for rule in rules}
        self.rules.update({rule.layer_type: rule for rule in rules})

    def rule_for(self, operation):
        """The rule for `operation`'s exact class, or None."""
        return self.rules.get(type(operation))

    def keeps_input_scale(self, operation, input_shape):
        """Whether `operation`'s int8 op passes its input's scale on: a pass-through rule, or a mean the
        converter drops (`averages_single_values`).

        Example:

        >>> registry = QuantizeRegistry()
        >>> registry.keeps_input_scale(keras.layers.MaxPooling2D(), (None, 8, 8, 4))
        True
        >>> mean = keras.layers.GlobalAveragePooling2D(keepdims=True)
        >>> registry.keeps_input_scale(mean, (None, 1, 1, 4)), registry.keeps_input_scale(mean, (None, 8, 8, 4))
        (True, False)
        """
        rule = self.rule_for(operation)
        if rule is None or self.reason(operation) is not None:
            return False
        return rule.role == "passthrough" or (rule.role == "output" and averages_single_values(operation, input_shape))

    def reason(self, operation):
        """Why `operation` cannot be quantized, or None when a rule covers it."""
        rule = self.rule_for(operation)
        if rule is None:
            return None if _traceable(operation) else "no quantization rule for this type"
        return rule.reason(operation)


def averages_single_values(operation, input_shape):
    """Whether `operation` is a mean over axes of size 1 that keeps them (a squeeze-excite mean on a 1x1 map).

    The converter drops such a MEAN as the identity, and its output
    quantization with it: the op keeps its input's scale, as a pass-through op.
    (Without `keepdims` it stays a MEAN with a scale of its own.)

    Example:

    >>> pool = keras.layers.GlobalAveragePooling2D(keepdims=True)
    >>> averages_single_values(pool, (None, 1, 1, 16)), averages_single_values(pool, (None, 7, 7, 16))
    (True, False)
    """
    from keras.src.ops import numpy as np_ops

    layers = keras.layers
    if isinstance(operation, np_ops.Mean):
        axis, keepdims = operation.axis, operation.keepdims
    elif isinstance(operation, (layers.GlobalAveragePooling1D, layers.GlobalAveragePooling2D)):
        keepdims = operation.keepdims
        spatial = 1 if isinstance(operation, layers.GlobalAveragePooling1D) else 2
        axis = tuple(range(1, 1 + spatial)) if operation.data_format == "channels_last" else None
    else:
        return False
    if not keepdims or axis is None or input_shape is None:
        return False
    rank = len(input_shape)
    return all(input_shape[a % rank] == 1 for a in ((axis,) if isinstance(axis, int) else axis))


def _traceable(operation):
    """A subclassed layer of the user's (not a Keras built-in) is traced through when it has no rule."""
    return isinstance(operation, keras.layers.Layer) and not type(operation).__module__.startswith("keras.")


def supported_layer_types():
    """The Keras layer classes `quantize_model` quantizes (Keras 3 path), by class name.

    Derived from the registry (keras.ops operations, which it also covers, are
    left out: they are not layers a user names).

    Example:

    >>> "Conv2D" in supported_layer_types()
    True
    """
    return sorted(
        rule.layer_type.__name__
        for rule in default_rules()
        if issubclass(rule.layer_type, keras.layers.Layer)
    )
