"""Reading a `.tflite` flatbuffer without running it, and naming the Keras layers behind its tensors."""

import os
import re
import struct
from collections import Counter

import numpy as np

from keras_kd import interpreter as _interpreter
from keras_kd.backend import LEGACY_KERAS
from keras_kd.export._compact import names_a_layer
from keras_kd.export._reports import TensorInfo, TFLiteSummary

_EDGE_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})
_SHAPE_ONLY_OPS = frozenset({"SHAPE", "RANK"})
_FLOAT_TENSOR_TYPES = frozenset({"FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16", "COMPLEX64", "COMPLEX128"})


def _enum_names(enum_class):
    return {value: name for name, value in vars(enum_class).items() if not name.startswith("_")}


def _as_list(array):
    # flatbuffers returns 0 (not an empty array) for an absent vector
    return [] if isinstance(array, int) else [v.item() for v in np.asarray(array).ravel()]


def _tensor_info(tensor, type_names):
    scale = zero_point = None
    quantization = tensor.Quantization()
    if quantization is not None:
        scales = _as_list(quantization.ScaleAsNumpy())
        zero_points = _as_list(quantization.ZeroPointAsNumpy())
        if scales:
            scale = float(scales[0]) if len(scales) == 1 else [float(s) for s in scales]
            zero_point = int(zero_points[0]) if len(zero_points) == 1 else [int(z) for z in zero_points]
    shape = _as_list(tensor.ShapeAsNumpy())
    signature = _as_list(tensor.ShapeSignatureAsNumpy()) or list(shape)
    name = tensor.Name()
    return TensorInfo(
        name=name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name),
        dtype=type_names[tensor.Type()].lower(),
        shape=shape,
        shape_signature=signature,
        scale=scale,
        zero_point=zero_point,
    )


def _any_float(subgraph, tensor_ids, type_names):
    return any(type_names[subgraph.Tensors(t).Type()] in _FLOAT_TENSOR_TYPES for t in _as_list(tensor_ids) if t >= 0)


def inspect_tflite(path):
    """Reads a `.tflite` file's flatbuffer: edge tensors, op counts, float and custom ops.

    The file is parsed, not run, so it also works for files with Flex ops that
    the local interpreter cannot load.

    Args:
        path: a `.tflite` file (or its content as `bytes`).

    Returns:
        A `TFLiteSummary`.

    Raises:
        FileNotFoundError: there is no file at `path`.
        ValueError: the file is not a TFLite flatbuffer.

    Example:

    ```python
    summary = inspect_tflite("student_int8.tflite")
    summary.inputs[0].dtype, summary.inputs[0].scale   # ("int8", 0.0039...)
    summary.float_ops                                  # [] for a fully integer file
    ```
    """
    if isinstance(path, (bytes, bytearray)):
        content, path = bytes(path), "<bytes>"
    else:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No .tflite file at {path!r}. Pass the path that `to_tflite` returned.")
        with open(path, "rb") as handle:
            content = handle.read()
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as error:  # pragma: no cover - ai-edge-litert is a dependency
        raise ImportError(
            "Reading a .tflite file needs ai-edge-litert (it ships the flatbuffer schema): "
            "`pip install ai-edge-litert`."
        ) from error
    if len(content) < 8 or content[4:8] != b"TFL3":
        raise ValueError(
            f"{path!r} is not a TFLite flatbuffer (no 'TFL3' identifier; {len(content)} bytes). "
            "Pass a file written by keras_kd.export.to_tflite or tf.lite.TFLiteConverter."
        )
    try:
        return _read_summary(schema, content, path)
    except (struct.error, IndexError, ValueError, TypeError, UnicodeDecodeError, KeyError) as error:
        raise ValueError(
            f"{path!r} is truncated or corrupt: its TFLite flatbuffer could not be read ({len(content):,} bytes; "
            f"{type(error).__name__}: {error}). Was the copy or the export interrupted? Export it again with "
            "keras_kd.export.to_tflite (which writes atomically), or copy the complete file."
        ) from None


def _check_buffers(model, content):
    """Every weight buffer must lie inside the file: a file cut short loses them first."""
    for index in range(model.BuffersLength()):
        buffer = model.Buffers(index)
        offset, size = int(buffer.Offset()), int(buffer.Size())
        if offset > 1 and offset + size > len(content):
            raise ValueError(f"buffer {index} ends at byte {offset + size:,}, past the end of the file")
        length = buffer.DataLength()
        if length:
            start = buffer._tab.Vector(buffer._tab.Offset(4))  # where the bytes of field `data` begin
            if start + length > len(content):
                raise ValueError(f"buffer {index} ends at byte {start + length:,}, past the end of the file")


def _read_summary(schema, content, path):
    model = schema.Model.GetRootAs(content, 0)
    _check_buffers(model, content)
    op_names = _enum_names(schema.BuiltinOperator)
    type_names = _enum_names(schema.TensorType)
    codes = []
    for index in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(index)
        # builtin codes above 127 live in BuiltinCode(); older files only fill the deprecated byte
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            custom = code.CustomCode()
            codes.append((custom.decode("utf-8", "replace") if custom else "CUSTOM", True))
        else:
            codes.append((op_names.get(builtin, f"BUILTIN_{builtin}"), False))
    op_counts, float_ops, custom_ops = Counter(), set(), set()
    float_op_tensors = {}
    for subgraph_index in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(subgraph_index)
        for op_index in range(subgraph.OperatorsLength()):
            operator = subgraph.Operators(op_index)
            name, is_custom = codes[operator.OpcodeIndex()]
            op_counts[name] += 1
            if is_custom:
                custom_ops.add(name)
            if name in _EDGE_OPS:
                continue
            # SHAPE/RANK read only the shape of a float tensor; they compute nothing in float
            reads_values = name not in _SHAPE_ONLY_OPS
            if _any_float(subgraph, operator.OutputsAsNumpy(), type_names) or (
                reads_values and _any_float(subgraph, operator.InputsAsNumpy(), type_names)
            ):
                float_ops.add(name)
                float_op_tensors.setdefault(name, []).extend(_operator_tensor_names(model, subgraph, operator))
    main = model.Subgraphs(0)
    inputs, outputs = _keras_order(model, main)
    return TFLiteSummary(
        path=path,
        size_bytes=len(content),
        inputs=[_tensor_info(main.Tensors(t), type_names) for t in inputs],
        outputs=[_tensor_info(main.Tensors(t), type_names) for t in outputs],
        op_counts=dict(sorted(op_counts.items())),
        float_ops=sorted(float_ops),
        custom_ops=sorted(custom_ops),
        float_op_tensors={name: float_op_tensors[name] for name in sorted(float_op_tensors)},
    )


def _keras_order(model, main):
    """The main subgraph's input and output tensors in the Keras model's order.

    The graph lists several inputs or outputs in the converter's order (two inputs
    often come back reversed); the serving signature names them `input_0, ...` in
    the Keras order, as the interpreter reads them (`keras_kd.interpreter.input_details`).
    """
    order = [_as_list(main.InputsAsNumpy()), _as_list(main.OutputsAsNumpy())]
    if model.SignatureDefsLength() != 1 or model.SignatureDefs(0).SubgraphIndex() != 0:
        return order
    signature = model.SignatureDefs(0)
    for position, (length, entry) in enumerate(
        [(signature.InputsLength(), signature.Inputs), (signature.OutputsLength(), signature.Outputs)]
    ):
        named = {entry(k).Name().decode("utf-8", "replace"): entry(k).TensorIndex() for k in range(length)}
        if sorted(named.values()) == sorted(order[position]):
            order[position] = [named[name] for name in sorted(named, key=_interpreter.signature_position)]
    return order


def _tensor_name(subgraph, index):
    name = subgraph.Tensors(index).Name()
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


def _operator_tensor_names(model, subgraph, operator):
    """The names that say where an op came from: its outputs', else its constant inputs' (weights).

    An op writing the model's output has the signature's name (`StatefulPartitionedCall:0`); its
    weights name its layer. Its other inputs come from the layers before it, so they are left out.
    """
    names = [_tensor_name(subgraph, t) for t in _as_list(operator.OutputsAsNumpy()) if t >= 0]
    if not any(names_a_layer(name) for name in names):
        names += [
            _tensor_name(subgraph, t) for t in _as_list(operator.InputsAsNumpy())
            if t >= 0 and model.Buffers(subgraph.Tensors(t).Buffer()).DataLength() > 0
        ]
    return names


def _layer_paths(model):
    """{layer name: its path from the top model (`outer/inner/layer`)} for every layer, nested ones included."""
    paths = {}

    def walk(layer, prefix):
        for child in getattr(layer, "layers", None) or []:
            path = f"{prefix}/{child.name}" if prefix else child.name
            paths.setdefault(child.name, path)
            walk(child, path)

    walk(model, "")
    return paths


def keras_layers_of_tensors(tensor_names, model):
    """The Keras layers whose name scopes appear in TFLite tensor names, in order of first appearance.

    The converter names a tensor after the TensorFlow name scopes it was
    computed in (`net_1/se_squeeze_1/MatMul;net_1/se_squeeze_1/Relu`): the
    model and layer names, which Keras 3 suffixes with `_1` while tracing.
    Each scope is matched to a layer of `model` (nested models included).

    Returns:
        A list of layer paths (`layer`, or `inner_model/layer` for a nested one).
    """
    paths = _layer_paths(model)
    found = []
    for tensor_name in tensor_names:
        for part in str(tensor_name).split(";"):
            deepest = None
            for scope in part.split("/")[:-1]:
                unsuffixed = re.sub(r"_\d+$", "", scope)
                # Keras 3 adds a _N suffix while tracing; tf_keras keeps the layer's own name
                candidates = (scope, unsuffixed) if LEGACY_KERAS else (unsuffixed, scope)
                match = next((c for c in candidates if c in paths), None)
                if match is not None:
                    deepest = paths[match]
            if deepest is not None and deepest not in found:
                found.append(deepest)
    return found


def describe_float_op(op, tensor_names, model):
    layers = keras_layers_of_tensors(tensor_names, model)
    if layers:
        shown = ", ".join(repr(layer) for layer in layers[:8])
        shown += f" and {len(layers) - 8} more" if len(layers) > 8 else ""
        noun = "layer" if len(layers) == 1 else "layers"
        return f"{op} (from Keras {noun} {shown}; model.get_layer({layers[0].split('/')[-1]!r}))"
    named = [name for name in tensor_names if name]
    return f"{op} (tensors {', '.join(repr(n) for n in named[:3])})" if named else op
