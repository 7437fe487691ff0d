"""`quantize_model`: a quantization-aware copy of a Keras model, laid out as TFLite quantizes.

Two passes, both driven by the registry (`keras_kd.quantization.registry`):

1. `canonicalize` rewrites the float model the way TFLite executes it
   (SeparableConv split, non-fusable activations split off, LayerNormalization
   and attention as their int8 ops, subclassed layers traced); see
   `keras_kd.quantization.rewrites`.
2. The placement pass below walks the rewritten graph and gives each node what
   its rule's role says: a `QuantizedWeights` for a kernel (a following
   BatchNormalization folded, a following ReLU/ReLU6 fused, named after the last
   layer it absorbs, so `model.get_layer(name).output` is the same feature as in
   the float model), a `FakeQuant` on every tensor TFLite gives its own int8
   scale, a `QuantizedActivation` / `QuantizedAffine` where TFLite runs several
   int8 ops, nothing on pass-through ops. Every float model input and output is
   quantized, so the file's edges are int8. A producer feeding only a
   Concatenate leaves its output unquantized: TFLite gives every Concatenate
   input the Concatenate's scale.

Under tf_keras (`TF_USE_LEGACY_KERAS=1`) the same call delegates to
tensorflow-model-optimization.
"""

import collections
import warnings

import numpy as np

from keras_kd.backend import LEGACY_KERAS, keras
from keras_kd.quantization import layers as qlayers
from keras_kd.quantization.activations import ACTIVATIONS, activation_rule
from keras_kd.quantization.graph import (
    Graph,
    UniqueNames,
    all_layers,
    call_node,
    clone_layer,
    fill_arguments,
    is_functional,
    rebuild,
)
from keras_kd.quantization.registry import QuantizeRegistry, supported_layer_types
from keras_kd.quantization.rewrites import canonicalize

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
_QUANTIZED_CLASSES = (
    qlayers.FakeQuant,
    qlayers.QuantizedWeights,
    qlayers.QuantizedOutput,
    qlayers.QuantizedAveragePooling,
    qlayers.QuantizedResize,
    qlayers.QuantizedConstant,
    qlayers.QuantizedActivation,
    qlayers.QuantizedAffine,
)


def _is_float(tensor):
    return "float" in str(tensor.dtype)


class _Step:
    def __init__(self, node, kind, rule=None):
        self.node = node
        self.kind = kind  # weights | output | activation | affine | passthrough | float | model
        self.rule = rule
        self.operation = node.operation
        self.batch_norm = None
        self.activation = "linear"
        self.absorbed = []
        self.quantize_output = True
        self.output_range = rule.output_range if rule is not None else None
        self.reason = None

    @property
    def output_tensors(self):
        last = self.absorbed[-1] if self.absorbed else self.node
        return list(last.outputs)

    @property
    def name(self):
        return (self.absorbed[-1].operation if self.absorbed else self.operation).name


class _Placer:
    def __init__(self, registry, num_bits, ema_decay, names, per_channel=True):
        self.registry = registry
        self.per_channel = per_channel
        self.num_bits = num_bits
        self.ema_decay = ema_decay
        self.names = names
        self.models = {}  # id(nested model) -> (quantized model, output flags)
        self.layers = {}  # id(layer) -> (new layer, output flags): shared layers stay shared
        self.plans = {}  # id(model) -> (graph, steps, deferred): each graph is planned once

    def _per_channel(self, layer):
        """`QuantizedWeights`' `per_channel` for `layer` under `quantize_model`'s `per_channel` choice."""
        if self.per_channel is True:
            return None  # the kernel rule's own choice
        rule = qlayers.kernel_rule(layer)
        if self.per_channel == "depthwise" and rule.tflite_op == "DEPTHWISE_CONV_2D":
            return None
        return False if rule.per_channel else None

    # ----------------------------------------------------------------- planning

    def _fused_activation(self, node):
        """'relu'/'relu6' when `node` is an activation TFLite fuses into the op before it, else None."""
        rule = self.registry.rule_for(node.operation)
        if rule is None or rule.role != "activation" or rule.reason(node.operation) is not None:
            return None
        name = rule.activation(node.operation)
        return name if ACTIVATIONS[name].kind == "fused" else None

    def _absorb_activation(self, graph, step):
        follower = graph.only_consumer(step.output_tensors[0])
        if follower is None or graph.is_shared(follower.operation):
            return
        fused = self._fused_activation(follower)
        if fused is not None:
            step.activation = fused
            step.absorbed.append(follower)

    def _absorb_batch_norm(self, graph, step):
        follower = graph.only_consumer(step.node.outputs[0])
        if follower is None or type(follower.operation) is not keras.layers.BatchNormalization:
            return
        if graph.is_shared(follower.operation) or self.registry.reason(follower.operation) is not None:
            return
        step.batch_norm = follower.operation
        step.absorbed.append(follower)

    def plan(self, graph):
        """What each node becomes: (steps, deferred tensor ids)."""
        steps, absorbed = [], set()
        for node in graph.nodes:
            if id(node) in absorbed:
                continue
            operation = node.operation
            if is_functional(operation):
                steps.append(_Step(node, "model"))
                continue
            rule = self.registry.rule_for(operation)
            reason = self.registry.reason(operation) if rule is not None else "no quantization rule for this type"
            if reason is None and rule.role in ("rewrite", "trace"):
                reason = "it could not be rewritten into supported layers"
            if reason is not None:
                step = _Step(node, "float", rule)
                step.reason = reason
                steps.append(step)
                continue
            role = rule.role
            if role == "activation" and ACTIVATIONS[rule.activation(operation)].kind == "identity":
                role = "passthrough"
            if role == "output" and self.registry.keeps_input_scale(operation, node.input_tensors[0].shape):
                role = "passthrough"  # a mean the converter drops: a quantizer of its own would requantize
            step = _Step(node, role, rule)
            shared = graph.is_shared(operation)
            if role == "weights":
                step.activation = activation_rule(getattr(operation, "activation", None)).name
                if type(operation) is keras.layers.Embedding:
                    # GATHER keeps the table's scale: the output is quantized by the table itself.
                    step.quantize_output = False
                elif not shared:
                    if step.activation == "linear":
                        self._absorb_batch_norm(graph, step)
                    if step.activation == "linear":
                        self._absorb_activation(graph, step)
            elif role == "output" and rule.fuses_activation and not shared and isinstance(operation, keras.layers.Layer):
                self._absorb_activation(graph, step)
            absorbed.update(id(n) for n in step.absorbed)
            steps.append(step)

        # TFLite gives all Concatenate inputs the Concatenate's own scale: a producer feeding only
        # the Concatenate must not quantize with a range of its own.
        producers = {id(t): step for step in steps for t in step.output_tensors}
        deferred = set()
        for step in steps:
            if step.kind != "output" or not _is_concatenate(step.operation):
                continue
            for tensor in step.node.input_tensors:
                producer = producers.get(id(tensor))
                if (
                    producer is not None
                    and producer.kind in ("weights", "output")
                    and producer.output_range is None
                    and producer.quantize_output
                    and graph.only_consumer(tensor) is step.node
                    and not graph.is_shared(producer.operation)
                ):
                    producer.quantize_output = False
                    deferred.add(id(tensor))
        return steps, deferred

    def planned(self, model):
        """`(graph, steps, deferred)` of `model`, computed on first use and kept."""
        if id(model) not in self.plans:
            graph = Graph(model)
            self.plans[id(model)] = (graph, *self.plan(graph))
        return self.plans[id(model)]

    def unsupported(self, model, found=None, seen=None):
        """(name, class name, reason) of every node that will stay float, nested models included."""
        found = [] if found is None else found
        seen = set() if seen is None else seen
        if id(model) in seen:
            return found
        seen.add(id(model))
        _, steps, _ = self.planned(model)
        for step in steps:
            if step.kind == "float":
                found.append((_display_name(step.node), type(step.operation).__name__, step.reason))
            elif step.kind == "model":
                self.unsupported(step.operation, found, seen)
        return found

    # ----------------------------------------------------------------- building

    def _fake_quant(self, name, fixed_range=None):
        return qlayers.FakeQuant(
            num_bits=self.num_bits, ema_decay=self.ema_decay, fixed_range=fixed_range, name=self.names(name)
        )

    def transform(self, model, inputs_quantized, top=False):
        graph, steps, deferred = self.planned(model)
        by_node = {id(step.node): step for step in steps}
        quantized = {id(t): flag for t, flag in zip(graph.inputs, inputs_quantized)}
        quantized_versions = {}

        def quantized_input(tensor, tensors):
            key = id(tensor)
            if not _is_float(tensor) or quantized.get(key) or key in deferred:
                return tensors[key]
            if key not in quantized_versions:
                producer = tensor._keras_history[0]
                quantized_versions[key] = self._fake_quant(f"{producer.name}_quant")(tensors[key])
            return quantized_versions[key]

        def input_hook(old, new):
            if top and _is_float(old):
                quantized[id(old)] = True
                return self._fake_quant(f"{old._keras_history[0].name}_quant")(new)
            return new

        def output_hook(old, new):
            if top and _is_float(old) and not quantized.get(id(old)):
                return self._fake_quant(f"{old._keras_history[0].name}_quant")(new)
            return new

        def emit(node, tensors):
            step = by_node.get(id(node))
            if step is None:  # fused into the step before it
                return {}
            if step.kind in ("float", "passthrough"):
                replace = {}
            else:
                replace = {id(t): quantized_input(t, tensors) for t in node.input_tensors}
            input_flags = [quantized.get(id(t), False) for t in node.input_tensors if _is_float(t)]
            outputs, flags = self._emit(step, node, tensors, replace, input_flags)
            for old, new, flag in zip(step.output_tensors, outputs, flags):
                quantized[id(old)] = flag
            return {id(old): new for old, new in zip(step.output_tensors, outputs)}

        new_model = rebuild(
            graph, emit, input_hook=input_hook, output_hook=output_hook,
            model_class=None if top else qlayers.QuantizedSubmodel,
        )
        output_flags = [quantized.get(id(t), False) for t in graph.outputs]
        return new_model, output_flags

    def _constant_quantizer(self, step, node, tensors, replace):
        """For an op whose rule quantizes its constant operands: `value -> QuantizedConstant output or None`."""
        if step.kind != "output" or step.rule is None or not step.rule.quantizes_constants or not node.input_tensors:
            return None
        first = node.input_tensors[0]
        anchor = replace.get(id(first), tensors.get(id(first)))
        operation = step.operation

        def constant(value):
            if isinstance(value, (bool, int, float, str)) or value is None:
                return None  # a scalar is the end of its own range: the converter stores it exactly
            try:
                array = np.asarray(value)
            except Exception:  # noqa: BLE001 - not an array: left as it is
                return None
            if array.dtype.kind != "f" or array.size <= 1:
                return None
            layer = qlayers.QuantizedConstant(array, num_bits=self.num_bits, name=self.names(f"{operation.name}_constant"))
            return layer(anchor)

        return constant

    def _emit(self, step, node, tensors, replace, input_flags):
        """Returns (new outputs, quantized flag of each)."""
        operation = step.operation
        count = len(step.output_tensors)
        if step.kind == "model":
            if id(operation) not in self.models:
                self.models[id(operation)] = self.transform(operation, [True] * len(node.input_tensors))
            new_model, flags = self.models[id(operation)]
            return call_node(node, new_model, tensors, replace), flags
        constant = self._constant_quantizer(step, node, tensors, replace)
        if not isinstance(operation, keras.layers.Layer):
            outputs = call_node(node, operation, tensors, replace, constant)
            if step.kind == "passthrough":
                return outputs, [all(input_flags)] * count
            if step.kind == "float":
                return outputs, [False] * count
            if step.kind == "activation":
                layer = qlayers.QuantizedActivation(
                    step.rule.activation(operation), num_bits=self.num_bits, ema_decay=self.ema_decay,
                    name=self.names(operation.name),
                )
                first = node.input_tensors[0]
                return [layer(replace.get(id(first), tensors[id(first)]))], [True]
            if not step.quantize_output:
                return outputs, [False] * count
            return [self._fake_quant(f"{operation.name}_quant", step.output_range)(o) for o in outputs], [True] * count
        if id(operation) in self.layers:
            new, flags = self.layers[id(operation)]
            return call_node(node, new, tensors, replace), flags
        copies = []  # (new layer, original) whose weights are copied once built
        if step.kind in ("float", "passthrough"):
            new = clone_layer(operation)
            copies.append((new, operation))
            flags = [step.kind == "passthrough" and all(input_flags)] * count
            ties = step.rule.rounding(operation) if step.kind == "passthrough" else None
            if ties is not None and all(input_flags):
                resize = isinstance(operation, (keras.layers.UpSampling2D, keras.layers.Resizing))
                rounding = qlayers.QuantizedResize if resize else qlayers.QuantizedAveragePooling
                new = rounding(new, ties=ties, name=operation.name)
        elif step.kind == "activation":
            new = qlayers.QuantizedActivation(
                step.rule.activation(operation), num_bits=self.num_bits, ema_decay=self.ema_decay, name=operation.name
            )
            flags = [True] * count
        elif step.kind == "affine":
            scale, offset = step.rule.affine(operation)
            new = qlayers.QuantizedAffine(scale, offset, num_bits=self.num_bits, ema_decay=self.ema_decay, name=operation.name)
            flags = [True] * count
        else:
            common = dict(
                activation=step.activation,
                quantize_output=step.quantize_output,
                num_bits=self.num_bits,
                ema_decay=self.ema_decay,
                output_range=step.output_range,
                fused_layers=[operation.name] + [n.operation.name for n in step.absorbed],
                name=step.name,
            )
            if step.kind == "weights":
                config = operation.get_config()
                if "activation" in config:
                    config["activation"] = "linear"
                inner = type(operation).from_config(config)
                copies.append((inner, operation))
                batch_norm = None
                if step.batch_norm is not None:
                    batch_norm = clone_layer(step.batch_norm)
                    copies.append((batch_norm, step.batch_norm))
                new = qlayers.QuantizedWeights(
                    inner, batch_norm=batch_norm, per_channel=self._per_channel(inner), **common
                )
                # an Embedding's GATHER output carries the table's scale
                flags = [True] * count
            else:
                inner = clone_layer(operation)
                copies.append((inner, operation))
                new = qlayers.QuantizedOutput(inner, **common)
                flags = [step.quantize_output] * count
        self.layers[id(operation)] = (new, flags)
        if step.kind in ("float", "passthrough"):
            outputs = call_node(node, new, tensors, replace)
        else:
            first_kwargs = {k: v for k, v in node.arguments.kwargs.items() if k == "training"}
            local = {id(t): replace.get(id(t), tensors.get(id(t))) for t in node.input_tensors}
            args, _ = fill_arguments(node, local, constant)
            outputs = keras.tree.flatten(new(*args, **first_kwargs))
        for layer, original in copies:
            if original.weights:
                layer.set_weights(original.get_weights())
        return outputs, flags


def _display_name(node):
    """A name the user can look up: `'layer'` (model.get_layer), or a keras.ops node and the layer it follows."""
    operation = node.operation
    if isinstance(operation, keras.layers.Layer):
        return repr(operation.name)
    inputs = [t for t in node.input_tensors if hasattr(t, "_keras_history")]
    after = f" after {inputs[0]._keras_history[0].name!r}" if inputs else ""
    return f"keras.ops node {operation.name!r}{after}"


def _is_concatenate(operation):
    from keras.src.ops.numpy import Concatenate

    return type(operation) in (keras.layers.Concatenate, Concatenate)


_FIX = {
    "no quantization rule for this type": (
        "register a rule, quantize_model(model, rules=[QuantizeRule({cls}, 'output')]) (or 'passthrough', "
        "'trace'), or keep it in float with unsupported='float'"
    ),
}


def _format_unsupported(found):
    """One line per (type, reason): count, up to four layer names, the fix."""
    groups = collections.OrderedDict()
    for name, cls, reason in found:
        groups.setdefault((cls, reason), []).append(name)
    lines = []
    for (cls, reason), names in groups.items():
        shown = ", ".join(names[:4]) + (f", ... ({len(names) - 4} more)" if len(names) > 4 else "")
        fix = _FIX.get(reason, "change the layer, or keep it in float with unsupported='float'").format(cls=cls)
        lines.append(f"  {len(names)} x {cls} ({shown}): {reason}; fix: {fix}.")
    return "\n".join(lines)


def quantize_model(
    model, unsupported="error", num_bits=8, ema_decay=0.99, rules=None, custom_objects=None, per_channel=True
):
    """Returns a quantization-aware copy of `model` that TFLite converts to int8 end to end.

    The copy simulates TFLite int8 inference while it trains (see the module
    docstring for where the fake quantizers sit); the input model is not
    modified and its weights are copied. Convert the trained copy with
    `keras_kd.export.to_tflite(qat_model, path)`: the converter reads the ranges
    from the fake-quant ops, so no representative dataset is needed.

    What is supported comes from the registry (`supported_layer_types()`, and
    `keras_kd.quantization.registry` for the roles): keras.applications
    MobileNetV2/V3 and EfficientNet, SE blocks, hard-swish, swish, GELU,
    SeparableConv, Conv1D, Conv2DTranspose, Embedding, LayerNormalization,
    MultiHeadAttention, Rescaling and Normalization, keras.ops nodes in a
    Functional graph, nested models. A user layer is traced through its `call`
    when it has no rule; pass `rules` to tell `quantize_model` how to treat one.

    Under Keras 3 the result is a Functional model (also for a Sequential
    input) whose nested Functional/Sequential models stay nested, as
    `QuantizedSubmodel`s (Functional models that find, in the graph calling
    them, the quantizer their first layers read). Under
    tf_keras (`TF_USE_LEGACY_KERAS=1`) this calls
    `tensorflow_model_optimization.quantization.keras.quantize_model`.

    Args:
        model: a built Keras Sequential or Functional model.
        unsupported: "error" raises a ValueError listing, one line per layer
            type, what cannot be quantized and how to fix it; "float" leaves
            those layers in float (TFLite runs them between DEQUANTIZE and
            QUANTIZE; the file's inputs and outputs stay int8) and warns.
        num_bits: bit width of every quantizer; 8 for TFLite int8.
        ema_decay: decay of the activation-range moving averages (Keras 3
            path; tfmot uses its own 0.999).
        rules: `QuantizeRule`s for layers of your own (Keras 3 path); a rule
            for a built-in type replaces the default one.
        custom_objects: custom classes for tfmot's `quantize_scope` (tf_keras
            path only).
        per_channel: how convolution kernels are scaled (Keras 3 path). True
            (the default, as TFLite's converter does): one scale per output
            channel. "depthwise": only depthwise kernels per channel, every
            other convolution one scale per kernel. False: one scale per
            kernel everywhere. A per-channel kernel stores, per output channel,
            a float32 scale and an int64 zero point for the kernel and again
            for its bias; in a MobileNet of a few hundred thousand weights
            that is a tenth of the INT8 file. Dense, EinsumDense, Embedding and
            transposed convolutions take one scale in every mode.

    Returns:
        The quantization-aware model, uncompiled.

    Raises:
        ValueError: unsupported layers with `unsupported="error"`, a bad
            `unsupported` value, or a model whose graph cannot be read.
        ImportError: tf_keras path without tensorflow-model-optimization.

    Example:

    ```python
    student = keras.applications.MobileNetV3Small(input_shape=(96, 96, 3), weights=None, classes=10)
    qat_student = quantize_model(student)
    distiller = keras_kd.Distiller(teacher=teacher, student=qat_student).compile(optimizer="adam")
    distiller.fit(x, y, epochs=5)
    keras_kd.export.to_tflite(qat_student, "student_int8.tflite", validation_data=(x_val, y_val))
    ```
    """
    if unsupported not in _UNSUPPORTED_MODES:
        raise ValueError(
            f"unsupported must be one of {_UNSUPPORTED_MODES}, got {unsupported!r}: 'error' to stop on "
            "layers that cannot be quantized, 'float' to keep them in float."
        )
    if isinstance(per_channel, np.bool_):
        per_channel = bool(per_channel)
    if not (per_channel is True or per_channel is False or per_channel == "depthwise"):
        raise ValueError(
            f"per_channel must be True, 'depthwise' or False, got {per_channel!r}: True scales every convolution "
            "kernel per output channel, 'depthwise' only the depthwise ones, False none."
        )
    if not isinstance(model, keras.Model):
        raise TypeError(f"quantize_model expects a keras.Model, got {type(model).__name__}.")
    if LEGACY_KERAS:
        if per_channel is not True:
            raise ValueError(
                f"per_channel={per_channel!r} applies to keras_kd's own quantization (Keras 3); under tf_keras "
                "(TF_USE_LEGACY_KERAS=1) quantize_model uses tensorflow-model-optimization's per-channel scheme."
            )
        if rules:
            raise ValueError(
                "rules apply to keras_kd's own quantization (Keras 3); under tf_keras (TF_USE_LEGACY_KERAS=1) "
                "quantize_model uses tensorflow-model-optimization: pass its QuantizeConfig classes through "
                "custom_objects instead."
            )
        return _quantize_model_tfmot(model, unsupported, custom_objects)
    Graph(model)  # a readable graph, or a clear error before any work
    if is_quantization_aware(model):
        raise ValueError(
            f"{model.name!r} is already quantization-aware (it has keras_kd's quantized layers); train it and "
            "export it with to_tflite as it is. To quantize again, call quantize_model on the float model."
        )
    registry = QuantizeRegistry(rules)
    canonical = canonicalize(model, registry)
    placer = _Placer(
        registry, num_bits=num_bits, ema_decay=ema_decay, names=UniqueNames(canonical), per_channel=per_channel
    )
    found = placer.unsupported(canonical)
    if found:
        if unsupported == "error":
            raise ValueError(
                f"quantize_model cannot quantize {len(found)} layer(s) of {model.name!r}:\n"
                f"{_format_unsupported(found)}\nSupported layer types: {', '.join(supported_layer_types())}."
            )
        warnings.warn(
            f"quantize_model keeps {len(found)} layer(s) of {model.name!r} in float:\n{_format_unsupported(found)}\n"
            "Export the result with to_tflite(..., allow_float_fallback=True).",
            UserWarning,
            stacklevel=2,
        )
    new_model, _ = placer.transform(canonical, [False] * len(canonical.inputs), top=True)
    return new_model


def check_exportable(model):
    """What to_tflite checks on a keras_kd QAT model before converting it (Keras 3 path).

    Raises:
        ValueError: a layer computes in float16/bfloat16 (mixed precision): the
            converter cannot quantize through those casts.

    Warns:
        UserWarning: quantizers whose range never saw data (the model was never
            trained or called with `training=True`): TFLite would use [-6, 6].
    """
    if LEGACY_KERAS:
        return
    found = list(model._flatten_layers(include_self=False, recursive=True))
    reduced = sorted({layer.name for layer in found if str(getattr(layer, "compute_dtype", "float32")) in ("float16", "bfloat16")})
    if reduced:
        raise ValueError(
            f"{len(reduced)} layer(s) of {model.name!r} compute in reduced precision (mixed precision), e.g. "
            f"{', '.join(repr(n) for n in reduced[:3])}; the converter cannot quantize through their float16 casts. "
            "Train under mixed precision if you like, then export a float32 copy: "
            "keras.mixed_precision.set_global_policy('float32'); copy = quantize_model(float_model); "
            "copy.set_weights(qat_model.get_weights()); to_tflite(copy, ...)."
        )
    uncalibrated = [
        layer.name
        for layer in found
        if isinstance(layer, qlayers.FakeQuant) and layer.fixed_range is None and layer.built and int(layer.steps) == 0
    ]
    if uncalibrated:
        warnings.warn(
            f"{len(uncalibrated)} quantizer(s) of {model.name!r} never saw data (e.g. {uncalibrated[0]!r}), so the "
            "file will use their initial [-6, 6] range. Train the quantization-aware model (or call it on a few "
            "batches with training=True) before exporting.",
            UserWarning,
            stacklevel=3,
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
    return any(isinstance(layer, _QUANTIZED_CLASSES) or _is_tfmot_layer(layer) for layer in all_layers(model))


def float_layers(model, rules=None):
    """The layers (and keras.ops nodes) of a quantization-aware model that TFLite will run in float.

    Derived from the model's graph and the registry: a node computes in int8
    when it is one of keras_kd's quantized layers, or has a rule and reads only
    quantized tensors; everything else (what `quantize_model(...,
    unsupported="float")` kept, and pass-through layers fed by it) is listed.

    Args:
        model: a quantization-aware model.
        rules: the `rules` given to `quantize_model`, if any.

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
            for layer in all_layers(model)
            if not _is_tfmot_layer(layer) and type(layer).__name__ not in quiet and not isinstance(layer, keras.Model)
        ]
    registry = QuantizeRegistry(rules)
    found = []

    def walk(current, input_flags):
        graph = Graph(current)
        flags = {id(t): flag for t, flag in zip(graph.inputs, input_flags)}
        for node in graph.nodes:
            operation = node.operation
            reads = [flags.get(id(t), False) for t in node.input_tensors if _is_float(t)]
            if is_functional(operation):
                out = walk(operation, [flags.get(id(t), not _is_float(t)) for t in node.input_tensors])
            elif isinstance(operation, _QUANTIZED_CLASSES):
                out = [True] * len(node.outputs)
            else:
                rule = registry.rule_for(operation)
                supported = rule is not None and rule.reason(operation) is None and all(reads)
                if not supported:
                    found.append((operation.name, type(operation).__name__))
                out = [supported and rule.role == "passthrough"] * len(node.outputs)
            for tensor, flag in zip(node.outputs, out):
                flags[id(tensor)] = flag
        return [flags.get(id(t), False) for t in graph.outputs]

    walk(model, [False] * len(Graph(model).inputs))
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
        (repr(layer.name), type(layer).__name__, "not supported by tensorflow-model-optimization")
        for layer in model.layers
        if not isinstance(layer, passthrough) and not registry.supports(layer)
    ]
    qkeras = tfmot.quantization.keras
    scope = dict(custom_objects or {})
    if found and unsupported == "error":
        raise ValueError(
            f"quantize_model cannot quantize {len(found)} layer(s) of {model.name!r}:\n{_format_unsupported(found)}"
        )
    with qkeras.quantize_scope(scope):
        if not found:
            return qkeras.quantize_model(model)
        warnings.warn(
            f"quantize_model keeps {len(found)} layer(s) of {model.name!r} in float:\n{_format_unsupported(found)}",
            UserWarning,
            stacklevel=3,
        )
        unsupported_names = {name for name, _, _ in found}

        def annotate(layer):
            if isinstance(layer, keras.layers.InputLayer) or repr(layer.name) in unsupported_names:
                return layer
            return qkeras.quantize_annotate_layer(layer)

        annotated = keras.models.clone_model(model, clone_function=annotate)
        return qkeras.quantize_apply(annotated)
