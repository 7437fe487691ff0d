"""Converting a Keras model to a `.tflite` file, and checking that file against the model.

The path from a trained (student) model to a file that runs on a phone:

- `to_tflite` converts with the TFLite converter: full-integer INT8 (the
  default; post-training calibration for float models, the trained ranges for
  quantization-aware models), float16, dynamic-range or float32. Only builtin
  TFLite ops are allowed unless `allow_select_tf_ops=True`, because a file with
  Flex (SELECT_TF_OPS) ops does not run on a stock Android runtime. The file is
  written atomically and, with `validation_data`, run and compared with the
  Keras model before it is put under its final name.
- `inspect_tflite` reads the flatbuffer: tensors at the edges with their
  quantization parameters, op counts, and the ops still computing in float.
- `evaluate_tflite` runs the file on data (batching or looping as the file
  allows) and returns float predictions and the accuracy.
- `validate` compares the file with the Keras model (top-1 agreement, accuracy
  of each, output differences).
- `TFLiteEvalCallback` does the conversion and the evaluation during `fit`, so
  that `ModelCheckpoint(monitor="val_tflite_accuracy")` keeps the epoch whose
  real INT8 file is best, not the epoch whose float model is best.

Example:

```python
from keras_kd.export import to_tflite

report = to_tflite(student, "student_int8.tflite",
                   representative_data=x_train[:200],
                   validation_data=(x_val, y_val))
print(report.size_bytes, report.validation.agreement, report.float_ops)
```
"""

import contextlib
import dataclasses
import importlib
import os
import re
import shutil
import struct
import tempfile
from collections import Counter

import numpy as np

from keras_kd import files as _files
from keras_kd import interpreter as _interpreter
from keras_kd.backend import LEGACY_KERAS, keras, tf

__all__ = [
    "QUANTIZATION_MODES",
    "IO_DTYPES",
    "TensorInfo",
    "TFLiteSummary",
    "ExportReport",
    "EvaluationResult",
    "ValidationResult",
    "ExportValidationError",
    "to_tflite",
    "inspect_tflite",
    "evaluate_tflite",
    "validate",
    "TFLiteEvalCallback",
]

#: Accepted values of `to_tflite(quantization=...)`; `None` (or "float32") keeps float32 weights.
QUANTIZATION_MODES = ("int8", "float16", "dynamic", None)
#: Accepted values of `to_tflite(io_dtype=...)`.
IO_DTYPES = ("int8", "uint8", "float32")

_DEFAULT_CALIBRATION_SAMPLES = 200
_EDGE_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})
_SHAPE_ONLY_OPS = frozenset({"SHAPE", "RANK"})
_FLOAT_TENSOR_TYPES = frozenset({"FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16", "COMPLEX64", "COMPLEX128"})


# --------------------------------------------------------------------------- results


def _plain(value):
    """Converts numpy scalars/arrays (and containers of them) to JSON-friendly Python values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclasses.dataclass
class TensorInfo:
    """An input or output tensor of a `.tflite` file.

    Attributes:
        name: tensor name in the file.
        dtype: numpy dtype name ("int8", "uint8", "float32", ...).
        shape: static shape, with 1 where the batch is dynamic.
        shape_signature: shape with -1 for dynamic dimensions.
        scale: quantization scale (a float; a list when per-channel), None if not quantized.
        zero_point: quantization zero point (an int; a list when per-channel), None if not quantized.
    """

    name: str
    dtype: str
    shape: list
    shape_signature: list
    scale: object = None
    zero_point: object = None

    def to_dict(self):
        return _plain(dataclasses.asdict(self))


@dataclasses.dataclass
class TFLiteSummary:
    """What `inspect_tflite` reads from a `.tflite` flatbuffer.

    Attributes:
        path: the file.
        size_bytes: file size.
        inputs: `TensorInfo` of each input of the main subgraph.
        outputs: `TensorInfo` of each output.
        op_counts: number of operators of each type, all subgraphs, e.g. `{"CONV_2D": 1}`.
        float_ops: sorted names of op types that compute in float (a float input or output
            tensor), leaving out the QUANTIZE/DEQUANTIZE that convert at the edges.
        custom_ops: sorted names of custom ops; Flex (SELECT_TF_OPS) ops are named `Flex<Op>`.
        float_op_tensors: for each op type of `float_ops`, the names of the tensors it writes (or,
            for an op that writes an unnamed output, of its weights). The converter names them
            after the Keras layers (`model/layer/Op`), so they say which layers stayed float.
    """

    path: str
    size_bytes: int
    inputs: list
    outputs: list
    op_counts: dict
    float_ops: list
    custom_ops: list
    float_op_tensors: dict = dataclasses.field(default_factory=dict)

    @property
    def flex_ops(self):
        """Custom ops that need the Flex delegate (TensorFlow kernels) at run time."""
        return [name for name in self.custom_ops if name.startswith("Flex")]

    def to_dict(self):
        data = dataclasses.asdict(self)
        data["flex_ops"] = self.flex_ops
        return _plain(data)


@dataclasses.dataclass
class EvaluationResult:
    """What `evaluate_tflite` returns.

    Attributes:
        predictions: float32 outputs of the file, dequantized, shape (num_samples, ...).
        accuracy: top-1 accuracy against the labels, or None without labels.
        num_samples: number of samples run.
    """

    predictions: np.ndarray
    accuracy: object = None
    num_samples: int = 0

    def to_dict(self):
        """JSON-friendly summary (the predictions are left out; they are an array)."""
        return {"accuracy": _plain(self.accuracy), "num_samples": int(self.num_samples)}


@dataclasses.dataclass
class ValidationResult:
    """What `validate` returns: how closely a `.tflite` file follows its Keras model.

    Attributes:
        agreement: fraction of samples where the two top-1 classes are the same.
        keras_accuracy: top-1 accuracy of the Keras model, None without labels.
        tflite_accuracy: top-1 accuracy of the file, None without labels.
        max_abs_diff: largest absolute difference between the outputs.
        mean_abs_diff: mean absolute difference between the outputs.
        num_samples: number of samples compared.
    """

    agreement: float
    keras_accuracy: object
    tflite_accuracy: object
    max_abs_diff: float
    mean_abs_diff: float
    num_samples: int

    def to_dict(self):
        return _plain(dataclasses.asdict(self))


@dataclasses.dataclass
class ExportReport:
    """What `to_tflite` returns about the file it wrote.

    Attributes:
        path: the final path of the file.
        size_bytes: its size.
        quantization: "int8", "float16", "dynamic" or None (float32).
        quantization_aware: True when the model was converted from its trained
            (QAT) ranges rather than calibrated.
        inputs, outputs: `TensorInfo` of each, with dtype and scale/zero point.
        op_counts: operators by type.
        float_ops: op types still computing in float (see `TFLiteSummary`).
        custom_ops: custom and Flex ops in the file.
        validation: the `ValidationResult` when `validation_data` was given, else None.
    """

    path: str
    size_bytes: int
    quantization: object
    quantization_aware: bool
    inputs: list
    outputs: list
    op_counts: dict
    float_ops: list
    custom_ops: list
    validation: object = None

    @property
    def input_dtype(self):
        return self.inputs[0].dtype if self.inputs else None

    @property
    def output_dtype(self):
        return self.outputs[0].dtype if self.outputs else None

    def to_dict(self):
        data = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        data["inputs"] = [t.to_dict() for t in self.inputs]
        data["outputs"] = [t.to_dict() for t in self.outputs]
        data["validation"] = self.validation.to_dict() if self.validation is not None else None
        return _plain(data)


class ExportValidationError(RuntimeError):
    """The converted file disagrees with the Keras model more than `min_agreement` allows.

    Attributes:
        result: the `ValidationResult`.
        rejected_path: where the rejected file was kept for inspection.
    """

    def __init__(self, message, result=None, rejected_path=None):
        super().__init__(message)
        self.result = result
        self.rejected_path = rejected_path


# --------------------------------------------------------------------------- reading a file


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
                float_op_tensors.setdefault(name, []).extend(_operator_tensor_names(subgraph, operator))
    main = model.Subgraphs(0)
    return TFLiteSummary(
        path=path,
        size_bytes=len(content),
        inputs=[_tensor_info(main.Tensors(t), type_names) for t in _as_list(main.InputsAsNumpy())],
        outputs=[_tensor_info(main.Tensors(t), type_names) for t in _as_list(main.OutputsAsNumpy())],
        op_counts=dict(sorted(op_counts.items())),
        float_ops=sorted(float_ops),
        custom_ops=sorted(custom_ops),
        float_op_tensors={name: float_op_tensors[name] for name in sorted(float_op_tensors)},
    )


def _tensor_name(subgraph, index):
    name = subgraph.Tensors(index).Name()
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


def _operator_tensor_names(subgraph, operator):
    """The names that say where an op came from: its outputs', else its constant inputs' (weights)."""
    names = [_tensor_name(subgraph, t) for t in _as_list(operator.OutputsAsNumpy()) if t >= 0]
    if not any("/" in name for name in names):
        names += [_tensor_name(subgraph, t) for t in _as_list(operator.InputsAsNumpy()) if t >= 0]
    return names


# --------------------------------------------------------------------------- running a file


def _labels_to_classes(y, num_samples):
    y = np.asarray(y)
    if y.shape[0] != num_samples:
        raise ValueError(f"y has {y.shape[0]} labels but x has {num_samples} samples; pass one label per sample.")
    if y.ndim >= 2 and y.shape[-1] > 1:  # one-hot or soft targets
        return np.argmax(y.reshape(num_samples, -1), axis=-1)
    return y.reshape(num_samples).astype(np.int64)


def _top1(outputs):
    outputs = np.asarray(outputs)
    if outputs.ndim < 2 or outputs.shape[-1] < 2:
        raise ValueError(
            f"Top-1 accuracy and agreement need class scores of shape (num_samples, num_classes), got outputs "
            f"of shape {outputs.shape}. Evaluate a classifier head, or compare the raw predictions yourself."
        )
    return np.argmax(outputs.reshape(outputs.shape[0], -1), axis=-1)


def _accuracy(outputs, y):
    if y is None:
        return None
    return float(np.mean(_top1(outputs) == _labels_to_classes(y, len(outputs))))


def _single(details, what, path):
    if len(details) != 1:
        raise ValueError(
            f"{path!r} has {len(details)} {what}s; evaluate_tflite and validate handle files with one input and "
            "one output (a classifier). Run other files with keras_kd.interpreter.load_interpreter."
        )
    return details[0]


def _run_tflite(path, x, batch_size=256, num_threads=None):
    """Runs a single-input, single-output file on `x`; returns float32 outputs."""
    interpreter = _interpreter.load_interpreter(path, num_threads=num_threads)
    source = path if not isinstance(path, (bytes, bytearray)) else "<bytes>"
    input_detail = _single(_interpreter.input_details(interpreter), "input", source)
    output_detail = _single(_interpreter.output_details(interpreter), "output", source)
    x = np.asarray(x)
    expected = tuple(int(d) for d in input_detail["shape"][1:])
    if x.ndim == 0 or tuple(x.shape[1:]) != expected:
        raise ValueError(
            f"x has shape {x.shape} but the .tflite file expects (num_samples, {', '.join(map(str, expected))}). "
            "Reshape x like the data the model was trained on."
        )
    if x.dtype.kind not in "biuf":
        raise ValueError(f"x has dtype {x.dtype}; pass numeric (float) inputs like the training data.")
    signature = input_detail.get("shape_signature", input_detail["shape"])
    dynamic_batch = len(signature) > 0 and int(signature[0]) == -1
    fixed_batch = int(input_detail["shape"][0]) if len(input_detail["shape"]) else 1
    step = max(1, int(batch_size)) if dynamic_batch else fixed_batch
    outputs, current = [], None
    for start in range(0, len(x), step):
        chunk = x[start : start + step]
        count = len(chunk)
        if dynamic_batch:
            if current != count:
                interpreter.resize_tensor_input(input_detail["index"], [count, *expected])
                interpreter.allocate_tensors()
                current = count
        elif count < step:  # a fixed-batch file: pad the last chunk, then drop the padding
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - count, axis=0)])
        interpreter.set_tensor(input_detail["index"], _interpreter.quantize_input(chunk, input_detail))
        interpreter.invoke()
        # re-read the details: a resize changes the output shape recorded in them
        detail = _interpreter.output_details(interpreter)[0]
        result = _interpreter.dequantize_output(interpreter.get_tensor(detail["index"]), output_detail)
        outputs.append(result[:count])
    if not outputs:
        raise ValueError("x is empty (0 samples); pass at least one sample.")
    return np.concatenate(outputs).astype(np.float32)


def evaluate_tflite(path, x, y=None, batch_size=256, num_threads=None):
    """Runs a `.tflite` file on `x` and measures its top-1 accuracy against `y`.

    Inputs are quantized and outputs dequantized with the file's own scale and
    zero point, so integer files are fed the same float data as the Keras model.
    A file with a dynamic batch dimension is run `batch_size` samples at a time;
    a file with a fixed batch (often 1) is run that many at a time.

    Args:
        path: the `.tflite` file (or its bytes).
        x: float inputs, shape (num_samples, *input_shape).
        y: optional labels, sparse (num_samples,) or one-hot (num_samples, num_classes).
        batch_size: samples per invoke when the file's batch dimension is dynamic.
        num_threads: interpreter threads; None lets LiteRT choose.

    Returns:
        An `EvaluationResult` with float32 `predictions` and `accuracy` (None without `y`).

    Example:

    ```python
    result = evaluate_tflite("student_int8.tflite", x_val, y_val)
    result.accuracy, result.predictions.shape   # (0.97, (360, 10))
    ```
    """
    predictions = _run_tflite(path, x, batch_size=batch_size, num_threads=num_threads)
    return EvaluationResult(predictions=predictions, accuracy=_accuracy(predictions, y), num_samples=len(predictions))


def _keras_predict(model, x, batch_size=256):
    outputs = []
    for start in range(0, len(x), batch_size):
        result = model(tf.convert_to_tensor(x[start : start + batch_size]), training=False)
        if isinstance(result, dict) or isinstance(result, (list, tuple)):
            values = list(result.values()) if isinstance(result, dict) else list(result)
            if len(values) != 1:
                raise ValueError(
                    f"The Keras model returns {len(values)} outputs; validate compares single-output classifiers."
                )
            result = values[0]
        outputs.append(np.asarray(result, dtype=np.float32))
    return np.concatenate(outputs)


def _split_validation_data(data):
    if isinstance(data, tuple):
        if len(data) not in (1, 2, 3):
            raise ValueError(
                f"validation_data must be x, (x,) or (x, y), got a tuple of {len(data)} items."
            )
        return np.asarray(data[0]), (None if len(data) < 2 or data[1] is None else np.asarray(data[1]))
    return np.asarray(data), None


def validate(model, path, x, y=None, batch_size=256, num_threads=None):
    """Compares a `.tflite` file with the Keras model it came from, on the same inputs.

    Args:
        model: the Keras model (the student, not the Distiller).
        path: the `.tflite` file.
        x: inputs, shape (num_samples, *input_shape).
        y: optional labels (sparse or one-hot) to report the accuracy of each.
        batch_size: batch size for both the Keras model and the file.
        num_threads: interpreter threads.

    Returns:
        A `ValidationResult`: top-1 `agreement`, `keras_accuracy`, `tflite_accuracy`,
        `max_abs_diff`, `mean_abs_diff` of the outputs (in the model's output units:
        logits or probabilities).

    Example:

    ```python
    result = validate(student, "student_int8.tflite", x_val, y_val)
    assert result.agreement >= 0.99, result
    ```
    """
    x = np.asarray(x)
    tflite_outputs = _run_tflite(path, x, batch_size=batch_size, num_threads=num_threads)
    keras_outputs = _keras_predict(model, x, batch_size=batch_size)
    if keras_outputs.shape != tflite_outputs.shape:
        raise ValueError(
            f"The Keras model outputs shape {keras_outputs.shape} but the .tflite file {tflite_outputs.shape}; "
            "is the file converted from this model?"
        )
    difference = np.abs(keras_outputs - tflite_outputs)
    return ValidationResult(
        agreement=float(np.mean(_top1(keras_outputs) == _top1(tflite_outputs))),
        keras_accuracy=_accuracy(keras_outputs, y),
        tflite_accuracy=_accuracy(tflite_outputs, y),
        max_abs_diff=float(difference.max()) if difference.size else 0.0,
        mean_abs_diff=float(difference.mean()) if difference.size else 0.0,
        num_samples=int(len(x)),
    )


# --------------------------------------------------------------------------- converting


def _is_quantization_aware(model):
    try:
        from keras_kd.quantization import is_quantization_aware
    except ImportError:  # the quantization module is optional; without it no model is QAT
        return False
    return bool(is_quantization_aware(model))


def _normalize_quantization(quantization):
    if isinstance(quantization, str) and quantization.lower() in ("int8", "float16", "dynamic", "float32"):
        quantization = quantization.lower()
        return None if quantization == "float32" else quantization
    if quantization is None:
        return None
    raise ValueError(
        f"Unknown quantization {quantization!r}. Expected one of 'int8' (full-integer), 'float16', "
        "'dynamic' (int8 weights, float activations) or None / 'float32' (no quantization)."
    )


def _normalize_io_dtype(io_dtype, quantization):
    if io_dtype is None:
        return "int8" if quantization == "int8" else "float32"
    try:
        name = np.dtype(io_dtype).name if not isinstance(io_dtype, str) else io_dtype.lower()
    except TypeError:
        name = getattr(io_dtype, "name", str(io_dtype))
    if name not in IO_DTYPES:
        raise ValueError(
            f"Unknown io_dtype {io_dtype!r}. Expected 'int8', 'uint8' or 'float32' "
            "(or None for int8 with quantization='int8' and float32 otherwise)."
        )
    if name != "float32" and quantization != "int8":
        raise ValueError(
            f"io_dtype={name!r} needs quantization='int8' (integer inputs and outputs exist only in a "
            f"full-integer file), but quantization is {quantization!r}. Use io_dtype='float32' or quantization='int8'."
        )
    return name


def _load_model(model):
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No saved model at {path!r}. Pass a keras.Model or the path of a .keras file.")
        return keras.models.load_model(path, compile=False)
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"model must be a keras.Model or the path of a .keras file, got {type(model).__name__}. "
            "For a Distiller pass distiller.student."
        )
    return model


def _check_output_path(path):
    # found before converting (minutes for a large model), not when the file is written
    return _files.check_writable_folder(path, "the output path")


def _dtype_name(spec):
    return tf.as_dtype(spec.dtype).name


def _expected_shape(shape):
    """'(num_samples, 8, 8, 1)' for an input spec shape whose first entry is the batch."""
    return "(num_samples, " + ", ".join("?" if d is None else str(d) for d in shape[1:]) + ")"


def _recorded_input_signature(model):
    """Keras 3 records the input shapes of a subclassed model's first call; its exporter reads them."""
    if LEGACY_KERAS or not getattr(model, "built", False):
        return None
    try:  # a private Keras helper: if it moves, fall back to the data or input_shape
        export_utils = importlib.import_module(keras.__name__ + ".src.export.export_utils")
        signature = export_utils.get_input_signature(model)
    except Exception:  # noqa: BLE001 - any failure here only means "shape unknown"
        return None
    flat = tf.nest.flatten(signature)
    return flat if all(hasattr(spec, "shape") and hasattr(spec, "dtype") for spec in flat) else None


def _input_specs(model, batch_size, data_hint=None):
    """(name, shape with batch, dtype) of each model input, from the model or else from data."""
    inputs = None
    with contextlib.suppress(AttributeError, ValueError):
        inputs = model.inputs
    specs = []
    if inputs:
        for index, tensor in enumerate(inputs):
            shape = [None if d is None else int(d) for d in tuple(tensor.shape)]
            dtype = tf.as_dtype(tensor.dtype).name
            name = getattr(tensor, "name", None) or f"input_{index}"
            specs.append((name, [batch_size, *shape[1:]], dtype))
        return specs
    recorded = _recorded_input_signature(model)
    if recorded:
        return [
            (getattr(spec, "name", None) or f"input_{index}", [batch_size, *list(spec.shape)[1:]], _dtype_name(spec))
            for index, spec in enumerate(recorded)
        ]
    if data_hint is not None:
        sample = np.asarray(data_hint)
        if sample.ndim >= 1 and sample.dtype.kind in "biuf":
            dtype = sample.dtype.name if sample.dtype.kind == "f" else "float32"
            return [("input_0", [batch_size, *sample.shape[1:]], dtype)]
    raise ValueError(
        f"{type(model).__name__} has no defined inputs, so its input shape is unknown. Build it with "
        "keras.Input(shape=...), call it once on a batch, or pass input_shape=(...) (without the batch) to to_tflite."
    )


def _first_inputs(data):
    """The inputs part of x, (x,), (x, y) or (x, y, sample_weight)."""
    if isinstance(data, tuple) and 1 <= len(data) <= 3:
        return data[0]
    return data


def _calibration_arrays(data, specs, num_samples, argument="representative_data"):
    """Turns calibration data into one float array per input, checked against the model's inputs."""
    if isinstance(data, tf.data.Dataset):
        chunks = []
        taken = 0
        for element in data:
            element = _first_inputs(element)
            array = np.asarray(element)
            if array.ndim == len(specs[0][1]) - 1:  # an unbatched dataset
                array = array[None]
            chunks.append(array)
            taken += len(array)
            if taken >= num_samples:
                break
        data = np.concatenate(chunks) if chunks else np.zeros((0,), np.float32)
    elif callable(data):
        raise TypeError(
            f"{argument} is a callable; pass the samples themselves (an array of shape (num_samples, ...), "
            "(x, y), or a tf.data.Dataset) so they can be checked against the model's input shape."
        )
    data = _first_inputs(data)
    arrays = list(data) if isinstance(data, list) else [data]
    if len(arrays) != len(specs):
        raise ValueError(
            f"{argument} holds {len(arrays)} input arrays but the model has {len(specs)} inputs "
            f"({', '.join(name for name, _, _ in specs)}). Pass one array per input, in order."
        )
    result = []
    for array, (name, shape, dtype) in zip(arrays, specs):
        expected = _expected_shape(shape)
        try:
            array = np.asarray(array)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{argument} for input {name!r} is not an array ({error}); expected {expected}.") from None
        if array.size == 0 or array.ndim == 0 or len(array) == 0:
            raise ValueError(
                f"{argument} is empty (shape {array.shape}); calibration needs samples of shape {expected} "
                "for input {name!r}: pass a few hundred typical training inputs.".replace("{name!r}", repr(name))
            )
        if array.dtype.kind not in "biuf":
            raise ValueError(
                f"{argument} has dtype {array.dtype} but input {name!r} takes {dtype} values of shape {expected}. "
                "Pass numeric arrays preprocessed like the training inputs."
            )
        if array.dtype.kind == "f":
            finite = np.isfinite(array.reshape(len(array), -1)).all(axis=1)
            if not finite.all():
                bad = np.flatnonzero(~finite)
                values = array[bad[0]][~np.isfinite(array[bad[0]])]
                raise ValueError(
                    f"{argument} for input {name!r} holds non-finite values (NaN or inf): {len(bad)} of its "
                    f"{len(array)} samples, the first at index {int(bad[0])} (value {values.ravel()[0]!r}). "
                    "Calibration would derive the INT8 ranges from them. Remove or repair those samples "
                    "(e.g. x[np.isfinite(x).reshape(len(x), -1).all(axis=1)]) and check the preprocessing."
                )
        sample_shape = tuple(array.shape[1:])
        wanted = shape[1:]
        if len(sample_shape) != len(wanted) or any(w is not None and w != s for w, s in zip(wanted, sample_shape)):
            raise ValueError(
                f"{argument} has shape {tuple(array.shape)} but input {name!r} expects {expected} ({dtype}). "
                "Reshape it like the training inputs (e.g. add the channel axis with x[..., None])."
            )
        if len(array) > num_samples:  # evenly spread: datasets are often sorted by class
            array = array[np.linspace(0, len(array) - 1, num_samples).round().astype(int)]
        result.append(array.astype(dtype))
    return result


@contextlib.contextmanager
def _saved_model_dir(model, specs):
    """Exports `model` as a SavedModel with an explicit serving signature; yields the folder."""
    if not getattr(model, "built", True):  # a subclassed model never called: build it on zeros of the given shape
        zeros = [np.zeros([1 if d is None else d for d in shape], dtype) for _, shape, dtype in specs]
        model(zeros[0] if len(zeros) == 1 else zeros, training=False)
    folder = _files.make_temporary_folder("keras_kd_export_")
    try:
        signature = [
            tf.TensorSpec(shape, tf.as_dtype(dtype), name=f"input_{index}")
            for index, (_, shape, dtype) in enumerate(specs)
        ]
        if LEGACY_KERAS:
            if len(signature) == 1:
                function = tf.function(lambda x: model(x, training=False), input_signature=signature)
            else:
                function = tf.function(lambda *xs: model(list(xs), training=False), input_signature=signature)
            tf.saved_model.save(model, folder, signatures={"serving_default": function.get_concrete_function()})
        else:
            # Keras 3: the ExportArchive tracks the variables, so the converter sees them as constants
            archive = keras.export.ExportArchive()
            archive.track(model)
            if len(signature) == 1:
                archive.add_endpoint("serve", lambda x: model(x, training=False), signature)
            else:
                archive.add_endpoint("serve", lambda xs: model(xs, training=False), [signature])
            archive.write_out(folder, verbose=False)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _error_code_name(error_data):
    try:
        enum = error_data.DESCRIPTOR.enum_types_by_name["ErrorCode"]
        return enum.values_by_number[error_data.error_code].name
    except (AttributeError, KeyError):
        return ""


def _explain_converter_error(error, allow_select_tf_ops):
    """Re-raises a ConverterError as a ValueError that names the ops and the fix."""
    flex, custom = [], []
    for data in getattr(error, "errors", []) or []:
        name = data.operator.name if data.HasField("operator") else ""
        code = _error_code_name(data)
        if code == "ERROR_NEEDS_FLEX_OPS":
            flex.append(name)
        elif code == "ERROR_NEEDS_CUSTOM_OPS":
            custom.append(name)
    flex, custom = sorted(set(flex)), sorted(set(custom))
    if flex and not allow_select_tf_ops:
        return ValueError(
            f"The model uses TensorFlow ops that have no builtin TFLite kernel: {', '.join(flex)}. "
            "Replace them with builtin-friendly ops, or opt in with to_tflite(..., allow_select_tf_ops=True): "
            "the file then needs the Flex delegate (tensorflow-lite-select-tf-ops on Android), which stock "
            "runtimes lack and which adds several MB to an app."
        )
    if custom:
        return ValueError(
            f"The model uses ops that neither TFLite builtins nor the Flex delegate implement: {', '.join(custom)}. "
            "Rewrite them with supported ops (see https://www.tensorflow.org/lite/guide/ops_compatibility)."
        )
    return None


def _convert(model, specs, quantization, io_dtype, calibration, allow_select_tf_ops, quantization_aware):
    with _saved_model_dir(model, specs) as folder:
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        # Builtins, not TFLITE_BUILTINS_INT8: ops that cannot be quantized then stay float and are
        # reported by name (float_ops) instead of failing inside the converter with an opaque message.
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if allow_select_tf_ops:
            ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
        converter.target_spec.supported_ops = ops
        if quantization is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantization == "int8":
            if calibration is not None:

                def representative_dataset():
                    for index in range(len(calibration[0])):
                        yield [array[index : index + 1] for array in calibration]

                converter.representative_dataset = representative_dataset
            io_type = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[io_dtype]
            converter.inference_input_type = io_type
            converter.inference_output_type = io_type
        try:
            return converter.convert()
        except Exception as error:  # ConverterError is not public API; recognise it by its error data
            explained = _explain_converter_error(error, allow_select_tf_ops)
            if explained is not None:
                raise explained from error
            if quantization == "int8" and calibration is None:
                raise ValueError(
                    f"Full-integer conversion of this quantization-aware model failed without calibration data "
                    f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). Some tensors "
                    "probably have no trained range; pass representative_data=x_train[:200] as well."
                ) from error
            raise


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


def _describe_float_op(op, tensor_names, model):
    layers = keras_layers_of_tensors(tensor_names, model)
    if layers:
        shown = ", ".join(repr(layer) for layer in layers[:8])
        shown += f" and {len(layers) - 8} more" if len(layers) > 8 else ""
        noun = "layer" if len(layers) == 1 else "layers"
        return f"{op} (from Keras {noun} {shown}; model.get_layer({layers[0].split('/')[-1]!r}))"
    named = [name for name in tensor_names if name]
    return f"{op} (tensors {', '.join(repr(n) for n in named[:3])})" if named else op


def _rejected_path(path):
    root, extension = os.path.splitext(path)
    return f"{root}.rejected{extension or '.tflite'}"


def to_tflite(
    model,
    path,
    quantization="int8",
    representative_data=None,
    io_dtype=None,
    allow_select_tf_ops=False,
    validation_data=None,
    min_agreement=0.99,
    num_calibration_samples=_DEFAULT_CALIBRATION_SAMPLES,
    allow_float_fallback=False,
    batch_size=None,
    input_shape=None,
):
    """Converts a Keras model to a `.tflite` file, checks it, and writes it atomically.

    INT8 (the default) is full-integer: weights and activations are int8, and so
    are the inputs and outputs unless `io_dtype` says otherwise. A model made
    quantization-aware with `keras_kd.quantization.quantize_model` is converted
    from its trained ranges; a float model is calibrated on `representative_data`
    (post-training quantization), which is then required.

    The file is written to a temp file in the same folder and renamed into place
    only when it is complete and, with `validation_data`, has passed validation.
    A failed or interrupted export leaves any existing file at `path` as it was.
    A file that fails validation is kept beside it as `<name>.rejected.tflite`
    for inspection (see `ExportValidationError.rejected_path`).

    Args:
        model: a `keras.Model` (for a Distiller pass `distiller.student`) or the
            path of a `.keras` file.
        path: where to write the `.tflite` file; its folder must exist.
        quantization: "int8" (full-integer), "float16" (float16 weights, about half
            the float32 size), "dynamic" (int8 weights, float activations) or
            None / "float32".
        representative_data: calibration inputs for post-training INT8: an array
            of shape (num_samples, *input_shape), `(x, y)`, a list of arrays for a
            multi-input model, or a `tf.data.Dataset` of those. Use a few hundred
            training inputs, preprocessed like the training data.
        io_dtype: dtype of the file's inputs and outputs: "int8" (default for
            quantization="int8"), "uint8", or "float32" (default otherwise; with
            int8 it adds QUANTIZE/DEQUANTIZE at the edges).
        allow_select_tf_ops: allow Flex ops (TensorFlow kernels). Off by default:
            such files need the Flex delegate, which stock Android runtimes lack.
        validation_data: `x` or `(x, y)`; when given, the file is run on it and
            compared with the Keras model (see `validate`).
        min_agreement: the lowest top-1 agreement with the Keras model accepted
            when `validation_data` is given.
        num_calibration_samples: at most this many samples (spread evenly) of
            `representative_data` are used for calibration.
        allow_float_fallback: with quantization="int8", accept ops the converter
            could not quantize (they stay float, listed in `float_ops`) instead of
            raising.
        batch_size: fix the batch dimension of the file (1 is usual on device);
            None keeps it dynamic.
        input_shape: the input shape without batch, for a subclassed model whose
            inputs are not defined yet.

    Returns:
        An `ExportReport`.

    Raises:
        ValueError: bad arguments, missing/empty/mis-shaped calibration data,
            ops that need Flex without `allow_select_tf_ops`, or float ops left
            in an INT8 file without `allow_float_fallback`.
        FileNotFoundError: the folder of `path` does not exist.
        ExportValidationError: the file agrees with the model on fewer than
            `min_agreement` of `validation_data`.

    Example:

    ```python
    report = to_tflite(student, "student_int8.tflite",
                       representative_data=x_train[:200], validation_data=(x_val, y_val))
    report.inputs[0].dtype, report.float_ops, report.validation.agreement
    # ('int8', [], 1.0)
    ```
    """
    quantization = _normalize_quantization(quantization)
    io_dtype = _normalize_io_dtype(io_dtype, quantization)
    path = _check_output_path(path)
    if not 0.0 <= float(min_agreement) <= 1.0:
        raise ValueError(f"min_agreement must be a fraction in [0, 1], got {min_agreement!r}.")
    if int(num_calibration_samples) < 1:
        raise ValueError(f"num_calibration_samples must be a positive integer, got {num_calibration_samples!r}.")
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer or None (dynamic), got {batch_size!r}.")
    model = _load_model(model)
    quantization_aware = _is_quantization_aware(model)
    if quantization_aware:
        from keras_kd.quantization.quantize import check_exportable

        check_exportable(model)
    if quantization_aware and quantization in ("float16", "dynamic"):
        # the converter would read the fake-quant ranges and write an int8 file anyway
        raise ValueError(
            f"quantization={quantization!r} does not apply to a quantization-aware model: its fake-quant ops "
            "make the converter write int8 regardless. Use quantization='int8' (io_dtype='float32' for float "
            "inputs and outputs), or export the float model it was made from."
        )

    hint = None
    if input_shape is not None:
        hint = np.zeros((1, *tuple(input_shape)), np.float32)
    elif representative_data is not None and not isinstance(representative_data, tf.data.Dataset):
        hint = _first_inputs(representative_data)
        hint = None if isinstance(hint, list) else hint
    elif validation_data is not None:
        hint = _split_validation_data(validation_data)[0]
    specs = _input_specs(model, None if batch_size is None else int(batch_size), hint)

    calibration = None
    if quantization == "int8":
        if representative_data is None and not quantization_aware:
            raise ValueError(
                "Post-training INT8 quantization of a float model needs calibration data, but "
                "representative_data is None. Pass representative_data=x_train[:200] (inputs of shape "
                + " / ".join(_expected_shape(shape) for _, shape, _ in specs)
                + "), make the model quantization-aware with keras_kd.quantization.quantize_model, "
                "or choose quantization='float16' / 'dynamic' / None."
            )
        if representative_data is not None:
            calibration = _calibration_arrays(representative_data, specs, int(num_calibration_samples))

    content = _convert(model, specs, quantization, io_dtype, calibration, allow_select_tf_ops, quantization_aware)
    summary = inspect_tflite(content)
    if quantization == "int8" and summary.float_ops and not allow_float_fallback:
        raise ValueError(
            "The INT8 file still computes these ops in float: "
            + "; ".join(_describe_float_op(op, summary.float_op_tensors.get(op, []), model)
                        for op in summary.float_ops)
            + ". The converter could not quantize them. Replace those layers with quantizable ones, or accept "
            "a mixed file with to_tflite(..., allow_float_fallback=True)."
        )

    validation = None

    def write_and_validate(temporary):
        # runs before the rename: a file that fails validation never reaches `path`
        nonlocal validation
        with open(temporary, "wb") as stream:
            stream.write(content)
            stream.flush()
            os.fsync(stream.fileno())
        if validation_data is None:
            return
        if summary.flex_ops:
            raise ValueError(
                f"The file uses Flex ops ({', '.join(summary.flex_ops)}), which the LiteRT interpreter here "
                "cannot run, so it cannot be validated. Drop validation_data or remove those ops."
            )
        x_val, y_val = _split_validation_data(validation_data)
        try:
            validation = validate(model, temporary, x_val, y_val)
        except _interpreter.XNNPackPrepareError as error:
            rejected = _rejected_path(path)
            os.replace(temporary, rejected)
            layers = keras_layers_of_tensors([problem["tensor"] for problem in error.problems], model)
            raise _interpreter.XNNPackPrepareError(
                f"XNNPACK, LiteRT's default CPU delegate, could not prepare the {quantization or 'float32'} "
                f"file converted from {model.name!r}, so it could not be validated. "
                + (f"Keras layers behind it: {', '.join(repr(layer) for layer in layers)}. " if layers else "")
                + error.explanation
                + f" The file was not written to {path!r}; it is kept as {rejected!r} for inspection.",
                error.problems,
                error.explanation,
            ) from error
        if validation.agreement < float(min_agreement):
            rejected = _rejected_path(path)
            os.replace(temporary, rejected)
            accuracy = ""
            if validation.keras_accuracy is not None:
                accuracy = (
                    f" (accuracy: Keras {validation.keras_accuracy:.4f}, TFLite {validation.tflite_accuracy:.4f})"
                )
            raise ExportValidationError(
                f"The {quantization or 'float32'} .tflite file agrees with the Keras model on only "
                f"{validation.agreement:.2%} of {validation.num_samples} validation samples, below "
                f"min_agreement={float(min_agreement):.2%}{accuracy}; max |diff| {validation.max_abs_diff:.4g}, "
                f"mean |diff| {validation.mean_abs_diff:.4g}. The file was not written to {path!r}; it is kept "
                f"as {rejected!r}. To fix: calibrate on more representative data (more samples, preprocessed "
                "like training), train with quantization-aware training (keras_kd.quantization), use "
                "quantization='float16', or lower min_agreement if this gap is acceptable.",
                result=validation,
                rejected_path=rejected,
            )

    _files.atomic_write(path, write_and_validate)

    return ExportReport(
        path=path,
        size_bytes=summary.size_bytes,
        quantization=quantization,
        quantization_aware=quantization_aware,
        inputs=summary.inputs,
        outputs=summary.outputs,
        op_counts=summary.op_counts,
        float_ops=summary.float_ops,
        custom_ops=summary.custom_ops,
        validation=validation,
    )


# --------------------------------------------------------------------------- in the training loop


class TFLiteEvalCallback(keras.callbacks.Callback):
    """Converts the model to `.tflite` every N epochs and logs the real file's accuracy.

    The float model and its INT8 file can rank epochs differently; this callback
    measures the file itself. It writes `val_tflite_accuracy` (with labels) and
    `val_tflite_agreement` (top-1 agreement with the Keras model) into the epoch
    logs, so `keras.callbacks.ModelCheckpoint(monitor="val_tflite_accuracy",
    mode="max")` and `EarlyStopping` can use them. Place this callback BEFORE
    those in the `callbacks` list: Keras calls them in order with the same logs.
    On epochs that are skipped (`every_n_epochs` > 1) the keys are absent.

    On a Distiller (a model with a `.student` attribute) the student is
    converted; `model_getter` overrides which model is converted.

    Args:
        validation_data: `x` or `(x, y)` to evaluate the file on.
        every_n_epochs: evaluate after every N-th epoch.
        quantization: passed to `to_tflite` ("int8" by default).
        representative_data: calibration data for post-training INT8; defaults to
            the validation inputs (fine for model selection; use training inputs
            for the final export).
        model_getter: `callable(model) -> keras.Model` choosing what to convert.
        io_dtype, num_calibration_samples, allow_float_fallback: passed to `to_tflite`.
        batch_size: evaluation batch size.
        verbose: 1 prints the figures after each evaluation.

    Attributes:
        history: list of `(epoch, {"val_tflite_accuracy": ..., "val_tflite_agreement": ..., "size_bytes": ...})`.

    Example:

    ```python
    callbacks = [
        TFLiteEvalCallback((x_val, y_val), representative_data=x_train[:200]),
        keras.callbacks.ModelCheckpoint("best.keras", monitor="val_tflite_accuracy", mode="max",
                                        save_best_only=True),
    ]
    distiller.fit(x_train, y_train, epochs=10, callbacks=callbacks)
    ```
    """

    def __init__(
        self,
        validation_data,
        every_n_epochs=1,
        quantization="int8",
        representative_data=None,
        model_getter=None,
        io_dtype=None,
        num_calibration_samples=_DEFAULT_CALIBRATION_SAMPLES,
        allow_float_fallback=False,
        batch_size=256,
        verbose=0,
    ):
        super().__init__()
        if int(every_n_epochs) < 1:
            raise ValueError(f"every_n_epochs must be a positive integer, got {every_n_epochs!r}.")
        if model_getter is not None and not callable(model_getter):
            raise TypeError(f"model_getter must be a callable model -> keras.Model, got {type(model_getter).__name__}.")
        self.x, self.y = _split_validation_data(validation_data)
        if len(self.x) == 0:
            raise ValueError("validation_data is empty; pass at least one sample (typically a few hundred).")
        self.every_n_epochs = int(every_n_epochs)
        self.quantization = _normalize_quantization(quantization)
        self.io_dtype = _normalize_io_dtype(io_dtype, self.quantization)
        self.representative_data = representative_data
        self.model_getter = model_getter
        self.num_calibration_samples = int(num_calibration_samples)
        self.allow_float_fallback = allow_float_fallback
        self.batch_size = int(batch_size)
        self.verbose = verbose
        self.history = []

    def _target_model(self):
        if self.model_getter is not None:
            return self.model_getter(self.model)
        student = getattr(self.model, "student", None)
        return student if isinstance(student, keras.Model) else self.model

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs != 0:
            return
        model = self._target_model()
        representative = self.representative_data
        if representative is None and self.quantization == "int8" and not _is_quantization_aware(model):
            representative = self.x
        with tempfile.TemporaryDirectory(prefix="keras_kd_tflite_eval_") as folder:
            report = to_tflite(
                model,
                os.path.join(folder, "model.tflite"),
                quantization=self.quantization,
                representative_data=representative,
                io_dtype=self.io_dtype,
                num_calibration_samples=self.num_calibration_samples,
                allow_float_fallback=self.allow_float_fallback,
            )
            result = validate(model, report.path, self.x, self.y, batch_size=self.batch_size)
        values = {"val_tflite_agreement": result.agreement}
        if result.tflite_accuracy is not None:
            values["val_tflite_accuracy"] = result.tflite_accuracy
        if logs is not None:
            logs.update(values)
        self.history.append((int(epoch), {**values, "size_bytes": report.size_bytes}))
        if self.verbose:
            figures = ", ".join(f"{key}={value:.4f}" for key, value in values.items())
            print(f"Epoch {epoch + 1}: {self.quantization or 'float32'} .tflite ({report.size_bytes} bytes): {figures}")
