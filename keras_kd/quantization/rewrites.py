"""Float-to-float graph rewrites that run before quantizers are placed.

`canonicalize(model, registry)` returns a float model that computes what
`model` computes, laid out the way TFLite executes it, so that every node of
the result has a rule in the registry:

* SeparableConv1D/2D become a DepthwiseConv (no bias) and a 1x1 Conv (TFLite
  has no separable kernel; it runs exactly these two).
* A Conv2D with `groups` equal to its input channels becomes the
  DepthwiseConv2D it is (keras-hub's MobileNet writes depthwise convolutions so).
* A weight layer with an activation TFLite does not fuse (swish, sigmoid,
  hard-swish, GELU) is split into the linear layer and an `Activation`.
* LayerNormalization becomes keras.ops (MEAN, SUB, MUL, RSQRT, ...), as TFLite
  decomposes it, so each intermediate tensor gets its own int8 range.
* `keras.ops.dot_product_attention` becomes einsum / softmax / einsum
  (BATCH_MATMUL, SOFTMAX, BATCH_MATMUL).
* A subclassed layer with a "trace" rule, or a user layer without a rule, is
  traced: its `call` is run on symbolic inputs into a nested Functional model.
* Nested Functional/Sequential models are rewritten and stay nested.

Every layer is copied (config and weights): the input model is never touched.
The rewritten layer that produces the original layer's output keeps its name,
so `model.get_layer(name).output` is the same feature before and after.
"""

import numpy as np

from keras_kd.backend import keras
from keras_kd.quantization.activations import activation_rule
from keras_kd.quantization.graph import Graph, UniqueNames, call_node, clone_layer, is_functional, rebuild

__all__ = ["canonicalize", "split_separable", "layer_norm_ops", "layer_norm_check", "attention_ops"]


def _fresh(layer_type, names, **config):
    config["name"] = names(config["name"])
    return layer_type(**config)


def split_separable(layer, args, kwargs, names):
    """SeparableConv -> DepthwiseConv (no bias) + 1x1 Conv, the two ops TFLite runs."""
    rank = len(layer.kernel_size)
    depthwise_type = keras.layers.DepthwiseConv2D if rank == 2 else keras.layers.DepthwiseConv1D
    conv_type = keras.layers.Conv2D if rank == 2 else keras.layers.Conv1D
    depthwise = _fresh(
        depthwise_type,
        names,
        name=f"{layer.name}_depthwise",
        kernel_size=layer.kernel_size,
        strides=layer.strides,
        padding=layer.padding,
        depth_multiplier=layer.depth_multiplier,
        dilation_rate=layer.dilation_rate,
        use_bias=False,
        dtype=layer.dtype_policy,
    )
    pointwise = conv_type(
        layer.filters, 1, activation=layer.activation, use_bias=layer.use_bias, name=layer.name,
        dtype=layer.dtype_policy,
    )
    outputs = pointwise(depthwise(args[0]))
    depthwise.set_weights([layer.depthwise_kernel.numpy()])
    pointwise_weights = [layer.pointwise_kernel.numpy()]
    if layer.use_bias:
        pointwise_weights.append(layer.bias.numpy())
    pointwise.set_weights(pointwise_weights)
    return [outputs]


def layer_norm_ops(layer, args, kwargs, names):
    """LayerNormalization over the last axis as the int8 ops TFLite decomposes it into."""
    x = args[0]
    axis = layer.axis if isinstance(layer.axis, int) else layer.axis[-1]
    mean = keras.ops.mean(x, axis=axis, keepdims=True)
    centered = keras.ops.subtract(x, mean)
    variance = keras.ops.mean(keras.ops.multiply(centered, centered), axis=axis, keepdims=True)
    outputs = keras.ops.multiply(centered, keras.ops.rsqrt(keras.ops.add(variance, layer.epsilon)))
    # Constant gamma and beta; an identity one is left out: the converter drops a MUL by 1 or an ADD
    # of 0 and would then meet two quantizers in a row with scales a rounding error apart.
    gamma = layer.gamma.numpy() if layer.scale else None
    beta = layer.beta.numpy() if layer.center else None
    if gamma is not None and not np.all(gamma == 1.0):
        outputs = keras.ops.multiply(outputs, gamma)
    if beta is not None and not np.all(beta == 0.0):
        outputs = keras.ops.add(outputs, beta)
    return [outputs]


def layer_norm_check(layer):
    axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
    rank = getattr(layer.input_spec, "ndim", None) if layer.input_spec is not None else None
    if getattr(layer, "rms_scaling", False):
        return "RMS-scaled LayerNormalization is not supported"
    if axis == -1 or (rank is not None and axis == rank - 1) or (rank is None and axis is not None):
        return None
    return "only a LayerNormalization over the last axis is supported"


def attention_ops(operation, args, kwargs, names):
    """dot_product_attention(query, key, value) as BATCH_MATMUL, SOFTMAX, BATCH_MATMUL."""
    reason = _attention_check(kwargs)
    if reason is not None:
        raise ValueError(
            f"quantize_model cannot quantize the keras.ops.dot_product_attention {operation.name!r}: {reason}. "
            "Call it without a mask or bias in the student, or keep the layer that calls it in float with "
            "unsupported='float' and a rule QuantizeRule(ThatLayer, 'output')."
        )
    query, key, value = (list(args) + [kwargs.get(k) for k in ("query", "key", "value")][len(args):])[:3]
    scale = kwargs.get("scale")
    if scale is None:
        scale = float(query.shape[-1]) ** -0.5
    scores = keras.ops.einsum("btnh,bsnh->bnts", keras.ops.multiply(query, scale), key)
    probabilities = keras.ops.softmax(scores, axis=-1)
    return [keras.ops.einsum("bnts,bsnh->btnh", probabilities, value)]


def _attention_check(kwargs):
    for name in ("bias", "mask"):
        if kwargs.get(name) is not None:
            return f"dot_product_attention with a {name} is not supported"
    if kwargs.get("is_causal"):
        return "causal dot_product_attention is not supported"
    if kwargs.get("attn_logits_soft_cap") is not None:
        return "dot_product_attention with a logits soft cap is not supported"
    return None


def _is_depthwise_grouped(layer):
    if type(layer) is not keras.layers.Conv2D or layer.groups == 1 or layer.data_format != "channels_last":
        return False
    return layer.kernel.shape[-2] == 1 and layer.filters % layer.groups == 0


class _Canonicalizer:
    def __init__(self, registry, names):
        self.registry = registry
        self.names = names
        self.models = {}
        self.clones = {}

    def model(self, model):
        # The entry keeps `model` alive: a traced block's temporary model would otherwise be freed,
        # and the next one, allocated at the same address, would be handed this one's rebuild.
        if id(model) not in self.models:
            graph = Graph(model)
            self.models[id(model)] = (model, rebuild(graph, lambda node, tensors: self._emit(graph, node, tensors)))
        return self.models[id(model)][1]

    def _emit(self, graph, node, tensors):
        operation = node.operation
        outputs = self._outputs(graph, node, operation, tensors)
        return {id(old): new for old, new in zip(node.outputs, outputs)}

    def _outputs(self, graph, node, operation, tensors):
        if is_functional(operation):
            return call_node(node, self.model(operation), tensors)
        rule = self.registry.rule_for(operation)
        if rule is not None and rule.role == "rewrite" and rule.reason(operation) is None:
            args, kwargs = node.arguments.fill_in({id(t): tensors[id(t)] for t in node.input_tensors})
            return keras.tree.flatten(rule.rewrite(operation, args, kwargs, self.names))
        if self._should_trace(operation, rule):
            # the traced model takes the node's input tensors flat, in order (query and value may be one tensor)
            traced = self._trace(node, operation)
            inputs = [tensors[id(t)] for t in node.input_tensors]
            return keras.tree.flatten(traced(inputs if len(inputs) > 1 else inputs[0]))
        if _is_depthwise_grouped(operation):
            return self._grouped_to_depthwise(node, operation, tensors)
        if rule is not None and rule.role == "weights" and rule.reason(operation) is None:
            activation = activation_rule(getattr(operation, "activation", None))
            if activation is not None and activation.kind not in ("identity", "fused"):
                return self._split_activation(node, operation, tensors, activation.name)
        return self._clone_call(node, operation, tensors)

    def _grouped_to_depthwise(self, node, layer, tensors):
        """Conv2D(groups=in_channels) is a depthwise convolution: TFLite runs it as DEPTHWISE_CONV_2D."""
        kernel = layer.kernel.numpy()  # (kh, kw, 1, filters), filters = in * multiplier
        in_channels = layer.groups
        multiplier = layer.filters // in_channels
        activation = activation_rule(layer.activation)
        fused = activation is None or activation.kind in ("identity", "fused")
        depthwise = keras.layers.DepthwiseConv2D(
            layer.kernel_size, strides=layer.strides, padding=layer.padding, depth_multiplier=multiplier,
            dilation_rate=layer.dilation_rate, use_bias=layer.use_bias,
            activation=layer.activation if fused else None,
            name=layer.name if fused else self.names(f"{layer.name}_preact"), dtype=layer.dtype_policy,
        )
        outputs = call_node(node, depthwise, tensors)
        weights = [kernel.reshape(*kernel.shape[:2], in_channels, multiplier)]
        if layer.use_bias:
            weights.append(layer.bias.numpy())
        depthwise.set_weights(weights)
        if fused:
            return outputs
        return [keras.layers.Activation(activation.name, name=layer.name, dtype=layer.dtype_policy)(outputs[0])]

    def _should_trace(self, operation, rule):
        from keras_kd.quantization.registry import _traceable

        if rule is not None:
            return rule.role == "trace"
        return _traceable(operation) or isinstance(operation, keras.Model)

    def _clone_call(self, node, operation, tensors):
        if not isinstance(operation, keras.layers.Layer):
            return call_node(node, operation, tensors)
        clone = self.clones.get(id(operation))
        fresh = clone is None
        if fresh:
            clone = clone_layer(operation)
            self.clones[id(operation)] = clone
        outputs = call_node(node, clone, tensors)
        if fresh and operation.weights:
            clone.set_weights(operation.get_weights())
        return outputs

    def _split_activation(self, node, layer, tensors, activation):
        config = layer.get_config()
        config.update(activation="linear", name=self.names(f"{layer.name}_preact"))
        linear = type(layer).from_config(config)
        outputs = call_node(node, linear, tensors)
        linear.set_weights(layer.get_weights())
        return [keras.layers.Activation(activation, name=layer.name, dtype=layer.dtype_policy)(outputs[0])]

    def _trace(self, node, layer):
        """A nested Functional model computing `layer`, made of its sublayers and keras.ops."""
        inner = [keras.Input(batch_shape=t.shape, dtype=t.dtype) for t in node.input_tensors]
        args, kwargs = node.arguments.fill_in({id(t): i for t, i in zip(node.input_tensors, inner)})
        try:
            clone = clone_layer(layer)
        except (TypeError, ValueError):
            # A config that does not round-trip (keras-hub's SqueezeAndExcite2D): trace the layer itself.
            # Its sublayers only gain symbolic nodes; the rewrite copies each of them below.
            clone = layer
        else:
            clone(*args, **kwargs)  # builds it, so the weights can be copied
            if layer.weights:
                clone.set_weights(layer.get_weights())
        kwargs = {key: value for key, value in kwargs.items() if key not in ("training", "mask")}
        try:
            outputs = clone.call(*args, **kwargs)
        except Exception as error:
            raise ValueError(
                f"quantize_model could not trace the {type(layer).__name__} layer {layer.name!r} through its "
                f"`call` ({type(error).__name__}: {error}). Give it a rule: quantize_model(model, "
                f"rules=[QuantizeRule({type(layer).__name__}, 'output')]) (or 'passthrough'), or keep it in "
                "float with unsupported='float'."
            ) from error
        traced = keras.Model(inner if len(inner) > 1 else inner[0], outputs, name=layer.name)
        return self.model(traced)


def canonicalize(model, registry):
    """The float model `quantize_model` places quantizers on (see the module docstring).

    Args:
        model: a Functional or Sequential model.
        registry: the `QuantizeRegistry` in use.

    Returns:
        A new Functional model computing the same function.
    """
    return _Canonicalizer(registry, UniqueNames(model)).model(model)
