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
- `TFLiteEvalCallback` (defined in `keras_kd.callbacks`, re-exported here)
  does the conversion and the evaluation during `fit`, so that
  `ModelCheckpoint(monitor="val_tflite_accuracy")` keeps the epoch whose real
  INT8 file is best, not the epoch whose float model is best.

Example:

```python
from keras_kd.export import to_tflite

report = to_tflite(student, "student_int8.tflite",
                   representative_data=x_train[:200],
                   validation_data=(x_val, y_val))
print(report.size_bytes, report.validation.agreement, report.float_ops)
```
"""

from keras_kd.export._convert import IO_DTYPES, QUANTIZATION_MODES, to_tflite
from keras_kd.export._evaluate import evaluate_tflite, validate
from keras_kd.export._inspect import inspect_tflite
from keras_kd.export._inspect import keras_layers_of_tensors  # noqa: F401 - plumbing: importable, not in __all__
from keras_kd.export._reports import (
    EvaluationResult,
    ExportReport,
    ExportValidationError,
    TensorInfo,
    TFLiteSummary,
    ValidationResult,
)

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


def __getattr__(name):
    # The callback lives with the other callbacks, which import this package; loading it on first
    # access keeps the two imports free of a cycle.
    if name == "TFLiteEvalCallback":
        from keras_kd.callbacks import TFLiteEvalCallback

        return TFLiteEvalCallback
    raise AttributeError(f"module 'keras_kd.export' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
