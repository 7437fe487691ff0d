"""What the export functions return: the file's tensors and ops, evaluation and validation figures."""

import dataclasses

import numpy as np


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
