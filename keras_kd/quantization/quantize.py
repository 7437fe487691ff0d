"""`quantize_model`: a quantization-aware copy of a Keras model, laid out as TFLite quantizes.

The transform walks the model graph and rewrites it the way the TFLite
converter will execute it in int8:

* Conv2D / DepthwiseConv2D / Dense absorb a following BatchNormalization
  (folded with its moving statistics) and a following ReLU/ReLU6 (a `ReLU`
  layer or an `Activation`), because TFLite fuses them into one kernel. The
  fused layer is named after the last layer it absorbs, so
  `model.get_layer(name).output` is the same feature as in the float model.
* One `FakeQuant` sits on every tensor that gets its own int8 parameters in
  TFLite: the model inputs, the outputs of Conv/Dense (after the fused
  activation), Add, Concatenate, GlobalAveragePooling2D, a standalone ReLU
  and Softmax (fixed at TFLite's 1/256 scale).
* MaxPooling2D, AveragePooling2D, Reshape, Flatten and Dropout keep their input's scale in
  TFLite, so they get no quantizer of their own.
* A layer feeding only a Concatenate leaves its output unquantized: TFLite
  gives every Concatenate input the Concatenate's scale.

Under tf_keras (`TF_USE_LEGACY_KERAS=1`) the same call delegates to
tensorflow-model-optimization.
"""

import warnings

from keras_kd.backend import LEGACY_KERAS, keras
from keras_kd.quantization import layers as qlayers
from keras_kd.quantization.quantizers import SOFTMAX_OUTPUT_RANGE

__all__ = [
    "quantize_model",
    "is_quantization_aware",
    "float_layers",
    "supported_layer_types",
]

_UNSUPPORTED_MODES = ("error", "float")
_QAT_INSTALL_HINT = (
    "Quantization-aware training under tf_keras (TF_USE_LEGACY_KERAS=1) uses "
    "tensorflow-model-optimization: install it with `pip install keras-kd[qat]`."
)


def _kinds():
    layers = keras.layers
    return {
        "weight": {
            layers.Conv2D: qlayers.QuantizedConv2D,
            layers.DepthwiseConv2D: qlayers.QuantizedDepthwiseConv2D,
            layers.Dense: qlayers.QuantizedDense,
        },
        "output": (
            layers.Add,
            layers.Concatenate,
            layers.GlobalAveragePooling2D,
            layers.Softmax,
            layers.ReLU,
            layers.Activation,
        ),
        "passthrough": (
            layers.InputLayer,
            layers.MaxPooling2D,
            # TFLite's int8 AVERAGE_POOL_2D keeps its input scale; an output range of
            # its own would only add a requantize before it.
            layers.AveragePooling2D,
            layers.Reshape,
            layers.Flatten,
            layers.Dropout,
        ),
    }


def supported_layer_types():
    """The Keras layer classes `quantize_model` quantizes (Keras 3 path), by class name.

    Example:

    >>> "Conv2D" in supported_layer_types()
    True
    """
    kinds = _kinds()
    classes = list(kinds["weight"]) + list(kinds["output"]) + list(kinds["passthrough"])
    return sorted({cls.__name__ for cls in classes} | {"BatchNormalization"})


def _activation_name(function):
    name = getattr(function, "__name__", None)
    return name if name in qlayers.FUSED_ACTIVATIONS else None


def _relu_kind(layer):
    """'relu'/'relu6' if `layer` is a standalone ReLU TFLite can fuse, else None."""
    if type(layer) is keras.layers.ReLU:
        if float(layer.negative_slope) != 0.0 or float(layer.threshold) != 0.0:
            return None
        if layer.max_value is None:
            return "relu"
        return "relu6" if float(layer.max_value) == 6.0 else None
    if type(layer) is keras.layers.Activation:
        name = _activation_name(layer.activation)
        return name if name in ("relu", "relu6") else None
    return None


def _is_softmax(layer):
    if type(layer) is keras.layers.Softmax:
        return layer.axis in (-1, [-1])
    if type(layer) is keras.layers.Activation:
        return getattr(layer.activation, "__name__", None) == "softmax"
    return False


def _unsupported_reason(layer, kinds):
    """Why `layer` cannot be quantized, or None when it can."""
    cls = type(layer)
    if cls in kinds["weight"]:
        if _activation_name(layer.activation) is None:
            return f"activation {getattr(layer.activation, '__name__', layer.activation)!r} is not fused by TFLite"
        if cls is not keras.layers.Dense and layer.data_format != "channels_last":
            return "data_format must be 'channels_last'"
        if cls is keras.layers.Conv2D and layer.groups != 1:
            return "grouped convolution (groups > 1)"
        return None
    if cls in kinds["passthrough"]:
        if cls is keras.layers.AveragePooling2D and layer.data_format != "channels_last":
            return "data_format must be 'channels_last'"
        return None
    if cls is keras.layers.Activation:
        if _relu_kind(layer) or _is_softmax(layer) or _activation_name(layer.activation) == "linear":
            return None
        return f"activation {getattr(layer.activation, '__name__', layer.activation)!r} is not supported"
    if cls is keras.layers.ReLU:
        return None if _relu_kind(layer) else "only ReLU and ReLU6 (max_value 6) are supported"
    if cls is keras.layers.Softmax:
        return None if _is_softmax(layer) else "only a softmax over the last axis is supported"
    if cls in kinds["output"]:
        if cls is keras.layers.GlobalAveragePooling2D and layer.data_format != "channels_last":
            return "data_format must be 'channels_last'"
        return None
    if cls is keras.layers.BatchNormalization:
        return "a BatchNormalization is supported only right after a Conv2D, DepthwiseConv2D or Dense"
    return "no quantized implementation"


class _Graph:
    """The nodes of a Functional (or built Sequential) model in topological order."""

    def __init__(self, model):
        functional = model
        if isinstance(model, keras.Sequential):
            functional = getattr(model, "_functional", None)
            if functional is None:
                raise ValueError(
                    f"Sequential model {model.name!r} is not built, so its graph is unknown. Give it an "
                    "`keras.Input(shape)` first layer (or call `model.build(input_shape)`) before quantize_model."
                )
        if not hasattr(functional, "_nodes_by_depth"):
            raise ValueError(
                f"quantize_model needs a Sequential or Functional model, got a subclassed "
                f"{type(model).__name__} ({model.name!r}) whose graph cannot be read. Rebuild it with the "
                "Functional API."
            )
        self.model = model
        self.inputs = list(functional.inputs)
        self.outputs = list(functional.outputs)
        self.inputs_struct = getattr(functional, "_inputs_struct", None)
        self.outputs_struct = getattr(functional, "_outputs_struct", None)
        self.nodes = []
        for depth in sorted(functional._nodes_by_depth, reverse=True):
            for node in functional._nodes_by_depth[depth]:
                if node.operation is not None and not node.is_input:
                    self.nodes.append(node)
        self.consumers = {}
        for node in self.nodes:
            for tensor in node.input_tensors:
                self.consumers.setdefault(id(tensor), []).append(node)
        self.output_ids = {id(tensor) for tensor in self.outputs}
        self.calls = {}
        for node in self.nodes:
            self.calls[id(node.operation)] = self.calls.get(id(node.operation), 0) + 1

    def only_consumer(self, tensor):
        """The single node consuming `tensor` when it is not also a model output, else None."""
        consumers = self.consumers.get(id(tensor), [])
        if len(consumers) != 1 or id(tensor) in self.output_ids:
            return None
        return consumers[0]


class _Step:
    def __init__(self, node, kind):
        self.node = node
        self.kind = kind  # weight | output | passthrough | float | model
        self.layer = node.operation
        self.batch_norm = None
        self.activation = "linear"
        self.absorbed = []
        self.quantize_output = True
        self.output_range = None

    @property
    def output_tensors(self):
        last = self.absorbed[-1] if self.absorbed else self.node
        return list(last.outputs)

    @property
    def name(self):
        return (self.absorbed[-1].operation if self.absorbed else self.layer).name


def _plan(graph, kinds):
    """Decides, node by node, what each becomes; returns (steps, unsupported)."""
    steps, unsupported, absorbed = [], [], set()
    for node in graph.nodes:
        if id(node) in absorbed:
            continue
        layer = node.operation
        if isinstance(layer, keras.Model):
            steps.append(_Step(node, "model"))
            continue
        reason = _unsupported_reason(layer, kinds)
        if reason is not None:
            unsupported.append((layer.name, type(layer).__name__, reason))
            steps.append(_Step(node, "float"))
            continue
        cls = type(layer)
        linear_activation = cls is keras.layers.Activation and _activation_name(layer.activation) == "linear"
        if cls in kinds["passthrough"] or linear_activation:
            steps.append(_Step(node, "passthrough"))
            continue
        step = _Step(node, "weight" if cls in kinds["weight"] else "output")
        shared = graph.calls[id(layer)] > 1
        if step.kind == "weight":
            step.activation = _activation_name(layer.activation)
            follower = None if shared else graph.only_consumer(node.outputs[0])
            if (
                step.activation == "linear"
                and follower is not None
                and type(follower.operation) is keras.layers.BatchNormalization
                and graph.calls[id(follower.operation)] == 1
                and follower.operation.axis in (-1, len(node.outputs[0].shape) - 1)
            ):
                step.batch_norm = follower.operation
                step.absorbed.append(follower)
        elif _relu_kind(layer):
            step.activation = _relu_kind(layer)
        elif _is_softmax(layer):
            step.output_range = SOFTMAX_OUTPUT_RANGE
        if step.activation == "linear" and not shared and (step.kind == "weight" or cls is keras.layers.Add):
            follower = graph.only_consumer(step.output_tensors[0])
            if follower is not None and _relu_kind(follower.operation) and graph.calls[id(follower.operation)] == 1:
                step.activation = _relu_kind(follower.operation)
                step.absorbed.append(follower)
        absorbed.update(id(n) for n in step.absorbed)
        steps.append(step)

    # TFLite gives all Concatenate inputs the Concatenate's own scale: a producer
    # feeding only the Concatenate must not quantize with a range of its own.
    producers = {id(t): step for step in steps for t in step.output_tensors}
    deferred = set()
    for step in steps:
        if step.kind == "output" and type(step.layer) is keras.layers.Concatenate:
            for tensor in step.node.input_tensors:
                producer = producers.get(id(tensor))
                if (
                    producer is not None
                    and producer.kind in ("weight", "output")
                    and producer.output_range is None
                    and graph.only_consumer(tensor) is step.node
                    and graph.calls[id(producer.layer)] == 1
                ):
                    producer.quantize_output = False
                    deferred.add(id(tensor))
    return steps, unsupported, deferred


def _clone(layer):
    return type(layer).from_config(layer.get_config())


class _Transformer:
    def __init__(self, num_bits, ema_decay, unsupported):
        self.num_bits = num_bits
        self.ema_decay = ema_decay
        self.unsupported_mode = unsupported
        self.kinds = _kinds()
        self.models = {}  # id(original nested model) -> (quantized model, output flags)
        self.layers = {}  # id(original layer) -> new layer (shared layers stay shared)
        self.weights = []  # (new layer, original layer) pairs to copy once built

    def collect_unsupported(self, model, found=None, seen=None):
        found = [] if found is None else found
        seen = set() if seen is None else seen
        if id(model) in seen:
            return found
        seen.add(id(model))
        graph = _Graph(model)
        _, unsupported, _ = _plan(graph, self.kinds)
        found.extend(unsupported)
        for node in graph.nodes:
            if isinstance(node.operation, keras.Model):
                self.collect_unsupported(node.operation, found, seen)
        return found

    def transform(self, model, inputs_quantized):
        graph = _Graph(model)
        steps, _, deferred = _plan(graph, self.kinds)
        used_names = {layer.name for layer in _all_layers(model)}
        new_inputs = []
        for tensor in graph.inputs:
            input_layer = tensor._keras_history[0]
            new_inputs.append(keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype, name=input_layer.name))
        tensors = {id(old): new for old, new in zip(graph.inputs, new_inputs)}
        quantized = {id(old): flag for old, flag in zip(graph.inputs, inputs_quantized)}
        quantized_versions = {}

        def unique(name):
            candidate, index = name, 1
            while candidate in used_names:
                candidate, index = f"{name}_{index}", index + 1
            used_names.add(candidate)
            return candidate

        def quantized_input(tensor):
            key = id(tensor)
            if quantized.get(key) or key in deferred:
                return tensors[key]
            if key not in quantized_versions:
                producer = tensor._keras_history[0]
                quantizer = qlayers.FakeQuant(
                    num_bits=self.num_bits, ema_decay=self.ema_decay, name=unique(f"{producer.name}_quant")
                )
                quantized_versions[key] = quantizer(tensors[key])
            return quantized_versions[key]

        for step in steps:
            node = step.node
            if step.kind in ("float", "passthrough"):
                local = {id(t): tensors[id(t)] for t in node.input_tensors}
            else:
                local = {id(t): quantized_input(t) for t in node.input_tensors}
            args, kwargs = node.arguments.fill_in(local)
            new_layer, flags = self._new_layer(step, node, [quantized.get(id(t), False) for t in node.input_tensors])
            if new_layer is not step.layer and step.kind in ("weight", "output"):
                # Keras records `mask` for masking-aware layers; the wrappers take none.
                kwargs = {key: value for key, value in kwargs.items() if key == "training"}
            outputs = keras.tree.flatten(new_layer(*args, **kwargs))
            for old, new, flag in zip(step.output_tensors, outputs, flags):
                tensors[id(old)] = new
                quantized[id(old)] = flag

        new_outputs = [tensors[id(t)] for t in graph.outputs]
        output_flags = [quantized[id(t)] for t in graph.outputs]
        if graph.inputs_struct is not None and not isinstance(model, keras.Sequential):
            new_inputs = keras.tree.pack_sequence_as(graph.inputs_struct, new_inputs)
        if graph.outputs_struct is not None and not isinstance(model, keras.Sequential):
            new_outputs = keras.tree.pack_sequence_as(graph.outputs_struct, new_outputs)
        elif len(new_outputs) == 1:
            new_outputs = new_outputs[0]
        if isinstance(new_inputs, list) and len(new_inputs) == 1:
            new_inputs = new_inputs[0]
        new_model = keras.Model(new_inputs, new_outputs, name=model.name)
        return new_model, output_flags

    def _new_layer(self, step, node, input_flags):
        """Returns (layer to call, quantized flag of each output)."""
        layer = step.layer
        n_outputs = len(step.output_tensors)
        if step.kind == "model":
            if id(layer) not in self.models:
                self.models[id(layer)] = self.transform(layer, [True] * len(node.input_tensors))
            return self.models[id(layer)]
        if id(layer) in self.layers:
            return self.layers[id(layer)]
        if step.kind == "float":
            new, flags = _clone(layer), [False] * n_outputs
            self.weights.append((new, layer))
        elif step.kind == "passthrough":
            new, flags = _clone(layer), [all(input_flags)] * n_outputs
        else:
            common = dict(
                activation=step.activation,
                quantize_output=step.quantize_output,
                num_bits=self.num_bits,
                ema_decay=self.ema_decay,
                output_range=step.output_range,
                fused_layers=[layer.name] + [n.operation.name for n in step.absorbed],
                name=step.name,
            )
            if step.kind == "weight":
                config = layer.get_config()
                config["activation"] = "linear"
                inner = type(layer).from_config(config)
                batch_norm = _clone(step.batch_norm) if step.batch_norm is not None else None
                new = self.kinds["weight"][type(layer)](inner, batch_norm=batch_norm, **common)
                self.weights.append((inner, layer))
                if batch_norm is not None:
                    self.weights.append((batch_norm, step.batch_norm))
            else:
                new = qlayers.QuantizedOutput(_clone(layer), **common)
                self.weights.append((new.layer, layer))
            flags = [step.quantize_output] * n_outputs
        result = (new, flags)
        self.layers[id(layer)] = result
        return result

    def copy_weights(self):
        for new, original in self.weights:
            if original.weights:
                new.set_weights(original.get_weights())


def _all_layers(model):
    found = []
    for layer in model.layers:
        found.append(layer)
        if isinstance(layer, keras.Model):
            found.extend(_all_layers(layer))
    return found


def _format_unsupported(unsupported):
    return "; ".join(f"{name!r} ({cls}): {reason}" for name, cls, reason in unsupported)


def quantize_model(model, unsupported="error", num_bits=8, ema_decay=0.99, custom_objects=None):
    """Returns a quantization-aware copy of `model` that TFLite converts to int8 end to end.

    The copy simulates TFLite int8 inference while it trains (see the module
    docstring for where the fake quantizers sit); the input model is not
    modified and its weights are copied. Convert the trained copy with
    `tf.lite.TFLiteConverter.from_keras_model` and
    `optimizations=[tf.lite.Optimize.DEFAULT]`: the converter reads the
    ranges from the fake-quant ops, so no representative dataset is needed
    (do not set `TFLITE_BUILTINS_INT8`, which demands one).

    Under Keras 3 the result is a Functional model (also for a Sequential
    input) whose nested Functional/Sequential models stay nested. Under
    tf_keras (`TF_USE_LEGACY_KERAS=1`) this calls
    `tensorflow_model_optimization.quantization.keras.quantize_model`
    (BN folding and layer support as tfmot provides; nested models are not
    supported there).

    Args:
        model: a built Keras Sequential or Functional model.
        unsupported: "error" raises a ValueError listing every layer that
            cannot be quantized; "float" leaves those layers in float (TFLite
            will then run them in float between QUANTIZE/DEQUANTIZE ops) and
            warns naming them.
        num_bits: bit width of every quantizer; 8 for TFLite int8.
        ema_decay: decay of the activation-range moving averages (Keras 3
            path; tfmot uses its own 0.999).
        custom_objects: custom classes for tfmot's `quantize_scope` (tf_keras
            path only).

    Returns:
        The quantization-aware model, uncompiled.

    Raises:
        ValueError: unsupported layers with `unsupported="error"`, a bad
            `unsupported` value, or a model whose graph cannot be read.
        ImportError: tf_keras path without tensorflow-model-optimization.

    Example:

    ```python
    float_model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(8, 3, use_bias=False),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    qat_model = quantize_model(float_model)
    qat_model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat_model.fit(x, y, epochs=1)
    converter = tf.lite.TFLiteConverter.from_keras_model(qat_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    int8_bytes = converter.convert()
    ```
    """
    if unsupported not in _UNSUPPORTED_MODES:
        raise ValueError(
            f"unsupported must be one of {_UNSUPPORTED_MODES}, got {unsupported!r}: 'error' to stop on "
            "layers that cannot be quantized, 'float' to keep them in float."
        )
    if not isinstance(model, keras.Model):
        raise TypeError(f"quantize_model expects a keras.Model, got {type(model).__name__}.")
    if LEGACY_KERAS:
        return _quantize_model_tfmot(model, unsupported, custom_objects)
    transformer = _Transformer(num_bits=num_bits, ema_decay=ema_decay, unsupported=unsupported)
    found = transformer.collect_unsupported(model)
    if found:
        if unsupported == "error":
            raise ValueError(
                f"quantize_model cannot quantize {len(found)} layer(s) of {model.name!r}: "
                f"{_format_unsupported(found)}. Supported layers: {', '.join(supported_layer_types())}. "
                "Replace these layers, or pass unsupported='float' to keep them in float (TFLite will "
                "then dequantize around them)."
            )
        warnings.warn(
            f"quantize_model keeps {len(found)} layer(s) of {model.name!r} in float: "
            f"{_format_unsupported(found)}.",
            UserWarning,
            stacklevel=2,
        )
    new_model, _ = transformer.transform(model, [False] * len(model.inputs))
    transformer.copy_weights()
    return new_model



def _quantized_classes():
    return (
        qlayers.FakeQuant,
        qlayers.QuantizedConv2D,
        qlayers.QuantizedDepthwiseConv2D,
        qlayers.QuantizedDense,
        qlayers.QuantizedOutput,
    )


def _is_tfmot_layer(layer):
    return type(layer).__module__.startswith("tensorflow_model_optimization")


def is_quantization_aware(model):
    """True when `model` carries fake-quant layers (from `quantize_model` or tfmot).

    A quantization-aware model converts to int8 from its own ranges, so the
    export needs no representative (calibration) data.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> is_quantization_aware(model), is_quantization_aware(quantize_model(model))
    (False, True)
    """
    classes = _quantized_classes()
    return any(isinstance(layer, classes) or _is_tfmot_layer(layer) for layer in _all_layers(model))


def float_layers(model):
    """The layers of a quantization-aware model that will run in float in TFLite.

    These are the layers `quantize_model(..., unsupported="float")` left
    unquantized (searched in nested models too). Layers that only move data
    (MaxPooling2D, Reshape, Flatten, Dropout, InputLayer) are not listed:
    they run in int8 on quantized inputs.

    Returns:
        A list of `(name, class name)` pairs, empty when everything is quantized.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> float_layers(quantize_model(model))
    []
    """
    if LEGACY_KERAS:
        quiet = ("InputLayer", "QuantizeLayer")
        return [
            (layer.name, type(layer).__name__)
            for layer in _all_layers(model)
            if not _is_tfmot_layer(layer) and type(layer).__name__ not in quiet and not isinstance(layer, keras.Model)
        ]
    kinds = _kinds()
    quiet = _quantized_classes() + tuple(kinds["passthrough"])
    found = []
    for layer in _all_layers(model):
        if isinstance(layer, keras.Model) or type(layer) in quiet:
            continue
        if type(layer) is keras.layers.Activation and _activation_name(layer.activation) == "linear":
            continue
        found.append((layer.name, type(layer).__name__))
    return found


def _quantize_model_tfmot(model, unsupported, custom_objects):
    try:
        import tensorflow_model_optimization as tfmot
        from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
            default_8bit_quantize_registry,
        )
    except ImportError as error:
        raise ImportError(_QAT_INSTALL_HINT) from error
    registry = default_8bit_quantize_registry.Default8BitQuantizeRegistry()
    # tfmot folds BatchNormalization into the Conv/Dense before it with layout transforms, not
    # through its registry; a BN it cannot fold makes tfmot raise its own error.
    passthrough = (keras.layers.InputLayer, keras.layers.BatchNormalization)
    found = [
        (layer.name, type(layer).__name__, "not supported by tensorflow-model-optimization")
        for layer in model.layers
        if not isinstance(layer, passthrough) and not registry.supports(layer)
    ]
    qkeras = tfmot.quantization.keras
    scope = dict(custom_objects or {})
    if found and unsupported == "error":
        raise ValueError(
            f"quantize_model cannot quantize {len(found)} layer(s) of {model.name!r}: "
            f"{_format_unsupported(found)}. Replace these layers, or pass unsupported='float' to keep them "
            "in float."
        )
    with qkeras.quantize_scope(scope):
        if not found:
            return qkeras.quantize_model(model)
        warnings.warn(
            f"quantize_model keeps {len(found)} layer(s) of {model.name!r} in float: {_format_unsupported(found)}.",
            UserWarning,
            stacklevel=3,
        )
        unsupported_names = {name for name, _, _ in found}

        def annotate(layer):
            if isinstance(layer, keras.layers.InputLayer) or layer.name in unsupported_names:
                return layer
            return qkeras.quantize_annotate_layer(layer)

        annotated = keras.models.clone_model(model, clone_function=annotate)
        return qkeras.quantize_apply(annotated)
