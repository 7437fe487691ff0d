"""`compare_layers`: where an INT8 file drifts from its quantization-aware Keras model.

The file is run with every intermediate tensor kept; each quantized layer of
the Keras model (a `FakeQuant`, `QuantizedWeights`, `QuantizedActivation`, ...),
also inside nested Functional/Sequential models, is matched to the file's
tensor that carries its output (TFLite tensor names keep the Keras layer
names, nested ones as `outer/inner`), and the two are compared on the same
inputs. A keras.ops call (`ops.mean`, `x * y`, in a Functional graph or a
block traced by `quantize_model`) is reported under the quantizer placed after
it (`mean_1_quant`), matched to the op TensorFlow named in its block's scope
(`block_se_1/Mean`). The file runs on XNNPACK, TFLite's default CPU kernels,
through a copy whose every op output is also a model output (XNNPACK keeps no
other tensor); `use_xnnpack=False` runs the builtin kernels instead.

Drift carries over: a layer one int8 step off shifts every layer after it, so
the drift of a deep layer grows even where the Keras layer computes what the
file computes. Each layer is therefore also run on the file's own input
tensors (its "local" drift): where that is more than a step off, the Keras
layer itself does not compute what the file's op computes.
"""

import dataclasses
import re
import warnings

import numpy as np

from keras_kd.backend import keras
from keras_kd.quantization.graph import Graph, all_layers, call_node, is_functional

__all__ = ["LayerDrift", "compare_layers"]


@dataclasses.dataclass
class LayerDrift:
    """How far one layer's output in the INT8 file is from the Keras QAT model.

    Attributes:
        name: the Keras layer; inside a nested model, its path (`"block1/conv"`).
        class_name: its class.
        tensor: the `.tflite` tensor compared with it.
        scale: that tensor's quantization scale (one int8 step).
        max_abs_diff, mean_abs_diff: over all compared values, in float units.
        max_steps: `max_abs_diff / scale`: 1 or 2 is rounding; more is drift,
            which grows with depth as each layer's roundings carry into the next.
        relative: `mean_abs_diff` over the mean |value| of the Keras output.
        local_max_steps: the layer run on the file's own input tensors instead
            of the Keras model's, against the file's output, in int8 steps. At
            most 1 where the Keras layer computes what the file's op computes:
            the kernels round a few values the other way (on XNNPACK, measured
            at most 1.6 % of a layer's values on the shipped networks; the
            builtin kernels' int8 MEAN rounds up, where XNNPACK and the Keras
            model round to nearest: 38 % of a squeeze-excite mean a step
            high). More than 1 points at this layer, not at the drift it was
            given.
            `None` where an input cannot be had from the file (it comes from
            a layer called several times, whose tensors cannot be told apart).
            Where an input comes out of an op the converter fused away, that
            op's Keras output on the file's values stands in, so its share of
            the drift shows on this layer.
        local_off: the fraction of the layer's values that are more than half a
            step off in that local comparison (`None` as above).
        fused_layers: the layers of the float model this one computes, in
            order, where it stands for several (a convolution, its folded
            BatchNormalization and its fused ReLU: `("stem", "stem_bn",
            "stem_relu")`, reported under the last one's name, which the
            quantized layer keeps); empty otherwise.
    """

    name: str
    class_name: str
    tensor: str
    scale: float
    max_abs_diff: float
    mean_abs_diff: float
    max_steps: float
    relative: float
    local_max_steps: float = None
    local_off: float = None
    fused_layers: tuple = ()


def _is_quantized(layer):
    from keras_kd.quantization.quantize import _QUANTIZED_CLASSES

    return isinstance(layer, _QUANTIZED_CLASSES)


def _op_outputs(interpreter):
    """Tensor indices in the order the ops produce them (once: a delegate's node lists them again)."""
    order, seen = [], set()
    for op in interpreter._get_ops_details():
        for index in op["outputs"]:
            if index >= 0 and index not in seen:
                order.append(index)
                seen.add(index)
    return order


def _matches(tensor_name, path):
    """Whether a TFLite tensor name belongs to the Keras layer at `path` (`"conv"`, `"block1/conv"`).

    The converter suffixes each name it emits with `_<n>` (`block1_1/conv_1/...`). The layer is a
    name scope, so a `/` follows it: a layer called `add` is not matched by `dense/add`, the bias
    op of a layer called `dense`.
    """
    parts = [re.escape(part) + r"(_\d+)?" for part in path.split("/")]
    pattern = re.compile(r"(^|/)" + "/".join(parts) + r"/")
    return any(pattern.search(part) for part in tensor_name.split(";"))


def _op_leaf(tensor_name, scope):
    """The name a tensor has directly in the name scope of the model at `scope`, without a layer's scope
    between (`"Mean"` for `.../block_se_1/Mean` in `"block/block_se"`), or None.

    The ops of a keras.ops call (`ops.mean`, `x * y`) in a Functional graph or a traced block run in the
    model's scope under TensorFlow's op name, with `_<n>` added when it repeats (`Mul`, `Mul_1`).
    """
    parts = [re.escape(part) + r"(_\d+)?" for part in scope.split("/")]
    pattern = re.compile(r"(^|/)" + "/".join(parts) + r"/(?P<leaf>[^/]+)$")
    for part in tensor_name.split(";"):
        found = pattern.search(part)
        if found:
            return re.sub(r"_\d+$", "", found.group("leaf"))
    return None


def _names_op(leaf, operation):
    """Whether a TensorFlow op name fits a keras.ops operation: `Mean` a `Mean`, `Mul` a `Multiply`."""
    ours, theirs = type(operation).__name__.lower(), leaf.lower()
    return ours.startswith(theirs) or theirs.startswith(ours)


def _op_quantizers(model, prefix, found):
    """`(scope, path, operation, shape)` of each quantizer placed after a keras.ops call, in `model` and the
    models nested in it (first call of each), into `found`."""
    graph, seen = Graph(model), set()
    scope = prefix[:-1] if prefix else model.name
    for node in graph.nodes:
        operation = node.operation
        if id(operation) in seen:
            continue
        seen.add(id(operation))
        if is_functional(operation):
            _op_quantizers(operation, f"{prefix}{operation.name}/", found)
        elif _is_quantized(operation) and node.input_tensors:
            producer = node.input_tensors[0]._keras_history[0]
            if not isinstance(producer, keras.layers.Layer):
                found.append((scope, prefix + operation.name, producer, tuple(node.outputs[0].shape[1:])))


def _op_tensors(model, details, order, fits):
    """`path -> tensor index` for the quantizers after keras.ops calls, whose names the file does not keep.

    Such a quantizer (`mean_1_quant`) is folded into the op before it, whose tensor is named by TensorFlow
    (`block_se_1/Mean`). In each model scope, the quantizers after one kind of op with one output shape are
    paired in graph order with the file's tensors of that scope, op kind and shape, and only where both
    counts agree: where the converter dropped one (a mean over a 1x1 map), none is guessed.
    """
    found = []
    _op_quantizers(model, "", found)
    groups = {}
    for scope, path, operation, shape in found:
        groups.setdefault((scope, type(operation).__name__, shape), (operation, []))[1].append(path)
    tensors = {}
    for (scope, _, shape), (operation, paths) in groups.items():
        candidates = []
        for index in order:
            leaf = _op_leaf(details[index]["name"], scope)
            if (
                leaf is not None
                and _names_op(leaf, operation)
                and details[index]["quantization"][0] > 0
                and fits(tuple(details[index]["shape"]), (None,) + shape)
            ):
                candidates.append(index)
        if len(candidates) == len(paths):
            tensors.update(zip(paths, candidates))
    return tensors


def _input_list(model, x, max_samples):
    """`x` (an array, a list in `model.inputs` order, or a dict by input name) as a list of arrays."""
    names = [tensor._keras_history[0].name for tensor in model.inputs]
    if isinstance(x, dict):
        missing = [name for name in names if name not in x]
        if missing:
            raise ValueError(
                f"x is a dict without the model's input(s) {missing}; its keys are {sorted(x)}. Key x by the "
                f"names of the model's inputs: {names}."
            )
        values = [x[name] for name in names]
    elif isinstance(x, (list, tuple)):
        values = list(x)
    else:
        values = [x]
    if len(values) != len(names):
        raise ValueError(
            f"{model.name!r} has {len(names)} input(s) ({', '.join(names)}) but x holds {len(values)}; pass one "
            "array per input, as a list in the model's input order or a dict by input name."
        )
    return [np.asarray(value)[: int(max_samples)] for value in values]


def _keras_outputs(model, values, prefix=""):
    """`(path, layer, output)` of every quantized layer of `model` and of the models nested in it, in graph order.

    `values` are the arrays fed to `model.inputs`. A nested model is run on the
    values its caller gives it (its first call when it is called several times).
    """
    graph = Graph(model)
    entries, seen, wanted = [], set(), []
    for node in graph.nodes:
        operation = node.operation
        if id(operation) in seen:
            continue
        if _is_quantized(operation):
            seen.add(id(operation))
            entries.append(("layer", operation, [node.outputs[0]]))
            wanted.append(node.outputs[0])
        elif is_functional(operation):
            seen.add(id(operation))
            entries.append(("model", operation, list(node.input_tensors)))
            wanted.extend(node.input_tensors)
    known = {id(tensor): value for tensor, value in zip(graph.inputs, values)}
    computed = [tensor for tensor in wanted if id(tensor) not in known]
    if computed:
        probe = keras.Model(graph.inputs, computed)
        feed = values if len(values) > 1 else values[0]
        results = probe.predict(feed, verbose=0, batch_size=len(values[0]))
        if len(computed) == 1:
            results = [results]
        known.update({id(tensor): np.asarray(result) for tensor, result in zip(computed, results)})
    rows = []
    for kind, operation, tensors in entries:
        if kind == "layer":
            rows.append((prefix + operation.name, operation, known[id(tensors[0])]))
        else:
            rows.extend(_keras_outputs(operation, [known[id(t)] for t in tensors], f"{prefix}{operation.name}/"))
    return rows


def _local_outputs(model, input_values, file_tensor, prefix, results):
    """Each quantized layer of `model` run on the file's own values of its inputs, into `results` by path.

    `input_values` are the file's values of `model.inputs` (`None` where the
    file has none). A quantized layer's output is replaced by the file's tensor
    for the layers after it, or where the file has none (the op is fused into
    the next one), by the layer's own output on the file's values; an op
    without quantizers (a pad, a reshape, a max pool) is run in Keras on the
    file's values.
    Returns the file's values of `model.outputs`.
    """
    graph = Graph(model)
    values = {id(tensor): value for tensor, value in zip(graph.inputs, input_values)}
    for node in graph.nodes:
        operation = node.operation
        inputs = {id(tensor): values.get(id(tensor)) for tensor in node.input_tensors}
        ready = all(value is not None for value in inputs.values())
        outputs = [None] * len(node.outputs)
        if _is_quantized(operation):
            path = prefix + operation.name
            local = np.asarray(call_node(node, operation, inputs)[0], np.float32) if ready else None
            if local is not None:
                results.setdefault(path, local)
            if not graph.is_shared(operation):  # a shared layer's tensors in the file cannot be told apart
                found = file_tensor(path, node.outputs[0].shape if local is None else local.shape)
                # no tensor of its own (fused into the next op, or the file's input): its result stands in
                outputs[0] = local if found is None else found
        elif is_functional(operation):
            outputs = _local_outputs(
                operation, [inputs[id(t)] for t in node.input_tensors], file_tensor, f"{prefix}{operation.name}/",
                results,
            )
        elif ready:
            outputs = [np.asarray(value) for value in call_node(node, operation, inputs)]
        for tensor, value in zip(node.outputs, outputs):
            values[id(tensor)] = value
    return [values.get(id(tensor)) for tensor in graph.outputs]


def _warn_float_ops(tflite_path):
    """Warns when the file computes ops in float: its values can match the Keras model while it is not all-int8."""
    from keras_kd.export import inspect_tflite

    float_ops = inspect_tflite(tflite_path).float_ops
    if float_ops:
        warnings.warn(
            f"The file computes {len(float_ops)} op type(s) in float ({', '.join(float_ops)}): it is not all-int8, "
            "even where its values match the Keras model's. Converted with tf.lite.TFLiteConverter yourself, a "
            "quantization-aware model keeps some of its simulation ops; convert it with keras_kd.export.to_tflite, "
            "or under keras_kd.quantization.converting(). (A float fallback you asked for is listed here too.)",
            UserWarning,
            stacklevel=3,
        )


def _fused(layer):
    fused = tuple(getattr(layer, "fused_layers", None) or ())
    return fused if len(fused) > 1 else ()


def compare_layers(model, tflite_path, x, max_samples=64, use_xnnpack=True):
    """Layer by layer, how far the INT8 file's intermediate tensors are from the Keras QAT model.

    Args:
        model: the quantization-aware Keras model the file was converted from
            (`quantize_model`'s result, trained).
        tflite_path: the `.tflite` file (a path or its bytes).
        x: inputs, as for `model.predict`: an array, or for a model with several
            inputs a list in `model.inputs` order or a dict by input name (at
            most `max_samples` samples are used). The file's inputs are matched
            to the model's by their signature names, not their order in the file.
        max_samples: how many samples to compare.
        use_xnnpack: run the file on XNNPACK, TFLite's default CPU kernels
            (the interpreter reads a copy whose every op output is also a
            model output, so the values are kept); False runs the builtin
            kernels, which round some int8 ops differently.

    Returns:
        A list of `LayerDrift`, in graph order, for every quantized layer whose
        tensor the file has; a layer inside a nested model is named by its path
        (`"block1/conv"`), a keras.ops call by the quantizer after it
        (`"block1/mean_1_quant"`). A layer fused into the op before it has no
        tensor of its own and is left out, as is a keras.ops call the file
        cannot be told to hold (a mean over a 1x1 map, which the converter
        drops). `max_steps` is the drift the file has built up by that layer;
        `local_max_steps` is the layer's own share of it.

    Raises:
        ValueError: `model` has no quantized layers, `x` does not fit the
            file's inputs (count or shape), the file's tensors have no names
            (`strip_names=True`), or none of its layers has a tensor in the
            file (a file converted from another model).

    Warns:
        UserWarning: the file computes some ops in float (it is not all-int8).

    Example:

    ```python
    for row in compare_layers(qat_student, "student_int8.tflite", x_val[:32]):
        print(f"{row.name:30s} {row.max_steps:6.1f} steps, on the file's inputs {row.local_max_steps}")
    ```
    """
    from keras_kd.interpreter import dequantize_output, input_details, load_interpreter, quantize_input

    if not any(_is_quantized(layer) for layer in all_layers(model)):
        raise ValueError(
            f"compare_layers needs a quantization-aware model (from keras_kd.quantization.quantize_model); "
            f"{model.name!r} has no quantized layers."
        )
    values = _input_list(model, x, max_samples)
    interpreter = load_interpreter(tflite_path, use_xnnpack=use_xnnpack, preserve_all_tensors=True)
    inputs = input_details(interpreter)
    if len(inputs) != len(values):
        raise ValueError(
            f"The file has {len(inputs)} input(s) but {model.name!r} has {len(values)}; pass the model the file "
            "was converted from."
        )
    for detail, value, tensor in zip(inputs, values, keras.tree.flatten(model.inputs)):
        expected = tuple(int(d) for d in detail["shape"][1:])
        if expected != tuple(value.shape[1:]):
            hint = (
                " x looks like one sample without its batch axis: pass x[None]."
                if tuple(value.shape) == expected else " Pass inputs shaped like the model's."
            )
            raise ValueError(
                f"x has samples of shape {tuple(value.shape[1:])} but the file's input for {tensor.name!r} takes "
                f"samples of shape {expected}.{hint}"
            )
        interpreter.resize_tensor_input(detail["index"], value.shape)
    _warn_float_ops(tflite_path)
    interpreter.allocate_tensors()
    for detail, value in zip(inputs, values):
        interpreter.set_tensor(detail["index"], quantize_input(value, detail))
    interpreter.invoke()
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    order = _op_outputs(interpreter)

    def fits(file_shape, shape):  # a traced block's symbolic shapes can leave a dimension unknown
        return len(file_shape) == len(shape) and all(d is None or d == f for d, f in zip(shape[1:], file_shape[1:]))

    unnamed = [index for index in order if not details[index]["name"]]
    if len(unnamed) > len(order) // 2:
        raise ValueError(
            f"{len(unnamed)} of the file's {len(order)} op outputs have no name (written with "
            "to_tflite(..., strip_names=True)): compare_layers finds a layer's tensor by its name. Compare a file "
            "written without strip_names; it computes the same values."
        )
    op_tensors = _op_tensors(model, details, order, fits)

    def file_index(path, shape):
        if path in op_tensors:
            index = op_tensors[path]
            return index if fits(tuple(details[index]["shape"]), tuple(shape)) else None
        candidates = [
            index
            for index in order
            if _matches(details[index]["name"], path)
            and fits(tuple(details[index]["shape"]), tuple(shape))
            and details[index]["quantization"][0] > 0
        ]
        return candidates[-1] if candidates else None  # the layer's last op: its quantized output

    def file_tensor(path, shape):
        index = file_index(path, shape)
        return None if index is None else dequantize_output(interpreter.get_tensor(index), details[index])

    file_inputs = [
        value if not detail["quantization"][0] else dequantize_output(quantize_input(value, detail), detail)
        for detail, value in zip(inputs, values)
    ]
    local = {}
    _local_outputs(model, file_inputs, file_tensor, "", local)

    rows = []
    outputs = _keras_outputs(model, values)
    for path, layer, expected in outputs:
        expected = np.asarray(expected, np.float32)
        index = file_index(path, expected.shape)
        if index is None:
            continue
        actual = dequantize_output(interpreter.get_tensor(index), details[index])
        difference = np.abs(actual - expected)
        scale = float(details[index]["quantization"][0])
        local_max_steps = local_off = None
        if path in local and local[path].shape == actual.shape:
            steps = np.abs(local[path] - actual) / scale
            local_max_steps, local_off = float(steps.max()), float(np.mean(steps > 0.5))
        rows.append(
            LayerDrift(
                name=path,
                class_name=type(layer).__name__,
                tensor=details[index]["name"],
                scale=scale,
                max_abs_diff=float(difference.max()),
                mean_abs_diff=float(difference.mean()),
                max_steps=float(difference.max() / scale),
                relative=float(difference.mean() / max(np.abs(expected).mean(), 1e-12)),
                local_max_steps=local_max_steps,
                local_off=local_off,
                fused_layers=_fused(layer),
            )
        )
    if outputs and not rows:
        raise ValueError(
            f"None of the {len(outputs)} quantized layers of {model.name!r} has a tensor in the file: compare_layers "
            "finds a layer's tensor by its name. Pass the file converted from this model (to_tflite(model, ...))."
        )
    return rows
