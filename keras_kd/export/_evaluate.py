"""Running a `.tflite` file on data, and comparing it with the Keras model it came from."""

import warnings

import numpy as np

from keras_kd import interpreter as _interpreter
from keras_kd.backend import tf
from keras_kd.export._reports import EvaluationResult, ValidationResult


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


def _one_output(details, path):
    if len(details) != 1:
        raise ValueError(
            f"{path!r} has {len(details)} outputs; evaluate_tflite and validate compare the one output of a "
            "classifier. Run other files with keras_kd.interpreter.load_interpreter."
        )
    return details[0]


def as_input_list(x):
    """`x` as one array per model input: a list or tuple of arrays is a multi-input model's inputs, in order."""
    if isinstance(x, (list, tuple)):
        return [np.asarray(array) for array in x]
    return [np.asarray(x)]


def _check_inputs(arrays, details, source):
    if len(arrays) != len(details):
        raise ValueError(
            f"{source!r} has {len(details)} inputs but x holds {len(arrays)} array(s). Pass a list with one array "
            "per input, in the Keras model's input order."
        )
    for position, (array, detail) in enumerate(zip(arrays, details)):
        expected = tuple(int(d) for d in detail["shape"][1:])
        which = f"x[{position}]" if len(arrays) > 1 else "x"
        if array.ndim == 0 or tuple(array.shape[1:]) != expected:
            raise ValueError(
                f"{which} has shape {array.shape} but the .tflite file expects (num_samples, "
                f"{', '.join(map(str, expected))}). Reshape it like the data the model was trained on."
            )
        if array.dtype.kind not in "biuf":
            raise ValueError(f"{which} has dtype {array.dtype}; pass numeric inputs like the training data.")
    if len({len(array) for array in arrays}) > 1:
        raise ValueError(
            f"The input arrays hold different numbers of samples ({[len(array) for array in arrays]}); "
            "pass the same samples to every input."
        )


def _run_tflite(path, x, batch_size=256, num_threads=None, use_xnnpack=True):
    """Runs a single-output file on `x` (an array, or a list of arrays for several inputs); returns float32 outputs."""
    interpreter = _interpreter.load_interpreter(path, num_threads=num_threads, use_xnnpack=use_xnnpack)
    source = path if not isinstance(path, (bytes, bytearray)) else "<bytes>"
    details = _interpreter.input_details(interpreter)
    output_detail = _one_output(_interpreter.output_details(interpreter), source)
    arrays = as_input_list(x)
    _check_inputs(arrays, details, source)
    signatures = [detail.get("shape_signature", detail["shape"]) for detail in details]
    dynamic_batch = all(len(signature) > 0 and int(signature[0]) == -1 for signature in signatures)
    fixed_batch = int(details[0]["shape"][0]) if len(details[0]["shape"]) else 1
    step = max(1, int(batch_size)) if dynamic_batch else fixed_batch
    outputs, current = [], None
    for start in range(0, len(arrays[0]), step):
        chunks = [array[start : start + step] for array in arrays]
        count = len(chunks[0])
        if dynamic_batch:
            if current != count:
                for chunk, detail in zip(chunks, details):
                    interpreter.resize_tensor_input(detail["index"], list(chunk.shape))
                interpreter.allocate_tensors()
                current = count
        elif count < step:  # a fixed-batch file: pad the last chunk, then drop the padding
            chunks = [np.concatenate([chunk, np.repeat(chunk[-1:], step - count, axis=0)]) for chunk in chunks]
        for chunk, detail in zip(chunks, details):
            interpreter.set_tensor(detail["index"], _interpreter.quantize_input(chunk, detail))
        interpreter.invoke()
        # re-read the details: a resize changes the output shape recorded in them
        detail = _interpreter.output_details(interpreter)[0]
        result = _interpreter.dequantize_output(interpreter.get_tensor(detail["index"]), output_detail)
        outputs.append(result[:count])
    if not outputs:
        raise ValueError("x is empty (0 samples); pass at least one sample.")
    return np.concatenate(outputs).astype(np.float32)


def evaluate_tflite(path, x, y=None, batch_size=256, num_threads=None, use_xnnpack=True):
    """Runs a `.tflite` file on `x` and measures its top-1 accuracy against `y`.

    Inputs are quantized and outputs dequantized with the file's own scale and
    zero point, so integer files are fed the same float data as the Keras model.
    A file with a dynamic batch dimension is run `batch_size` samples at a time;
    a file with a fixed batch (often 1) is run that many at a time.

    Args:
        path: the `.tflite` file (or its bytes).
        x: float inputs, shape (num_samples, *input_shape); for a file with
            several inputs, a list with one such array per input, in the Keras
            model's input order.
        y: optional labels, sparse (num_samples,) or one-hot (num_samples, num_classes).
        batch_size: samples per invoke when the file's batch dimension is dynamic.
        num_threads: interpreter threads; None lets LiteRT choose.
        use_xnnpack: False runs TFLite's builtin kernels instead of the XNNPACK
            delegate. The two round differently; comparing their predictions on
            the same file gives the rounding floor of an agreement figure.

    Returns:
        An `EvaluationResult` with float32 `predictions` and `accuracy` (None without `y`).

    Example:

    ```python
    result = evaluate_tflite("student_int8.tflite", x_val, y_val)
    result.accuracy, result.predictions.shape   # (0.97, (360, 10))
    ```
    """
    predictions = _run_tflite(path, x, batch_size=batch_size, num_threads=num_threads, use_xnnpack=use_xnnpack)
    return EvaluationResult(predictions=predictions, accuracy=_accuracy(predictions, y), num_samples=len(predictions))


def _keras_predict(model, arrays, batch_size=256):
    outputs = []
    for start in range(0, len(arrays[0]), batch_size):
        chunks = [tf.convert_to_tensor(array[start : start + batch_size]) for array in arrays]
        result = model(chunks[0] if len(chunks) == 1 else chunks, training=False)
        if isinstance(result, dict) or isinstance(result, (list, tuple)):
            values = list(result.values()) if isinstance(result, dict) else list(result)
            if len(values) != 1:
                raise ValueError(
                    f"The Keras model returns {len(values)} outputs; validate compares single-output classifiers."
                )
            result = values[0]
        outputs.append(np.asarray(result, dtype=np.float32))
    return np.concatenate(outputs)


def split_validation_data(data):
    if isinstance(data, tuple):
        if len(data) not in (1, 2, 3):
            raise ValueError(
                f"validation_data must be x, (x,) or (x, y), got a tuple of {len(data)} items."
            )
        x, y = data[0], (None if len(data) < 2 or data[1] is None else np.asarray(data[1]))
    else:
        x, y = data, None
    return (as_input_list(x) if isinstance(x, list) else np.asarray(x)), y


def validate(model, path, x, y=None, batch_size=256, num_threads=None):
    """Compares a `.tflite` file with the Keras model it came from, on the same inputs.

    Args:
        model: the Keras model (the student, not the Distiller).
        path: the `.tflite` file.
        x: inputs, shape (num_samples, *input_shape); for a model with several
            inputs, a list with one such array per input, in its input order.
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
    arrays = as_input_list(x)
    tflite_outputs = _run_tflite(path, arrays, batch_size=batch_size, num_threads=num_threads)
    keras_outputs = _keras_predict(model, arrays, batch_size=batch_size)
    if keras_outputs.shape != tflite_outputs.shape:
        raise ValueError(
            f"The Keras model outputs shape {keras_outputs.shape} but the .tflite file {tflite_outputs.shape}; "
            "is the file converted from this model?"
        )
    difference = np.abs(keras_outputs - tflite_outputs)
    keras_top1 = _top1(keras_outputs)
    if keras_top1.size > 1 and np.all(keras_top1 == keras_top1.flat[0]):
        warnings.warn(
            f"The Keras model predicts class {int(keras_top1.flat[0])} for every one of the {keras_top1.size} "
            "validation inputs, so the agreement says little about the file: an untrained or collapsed model, "
            "or inputs not preprocessed as in training. Validate on inputs the trained model tells apart.",
            stacklevel=2,
        )
    return ValidationResult(
        agreement=float(np.mean(keras_top1 == _top1(tflite_outputs))),
        keras_accuracy=_accuracy(keras_outputs, y),
        tflite_accuracy=_accuracy(tflite_outputs, y),
        max_abs_diff=float(difference.max()) if difference.size else 0.0,
        mean_abs_diff=float(difference.mean()) if difference.size else 0.0,
        num_samples=int(len(arrays[0])),
    )
