"""`to_tflite`: a Keras model to a checked `.tflite` file, one named step after another.

The steps: check the arguments, load the model, find its input specs, gather
the calibration data, run the TFLite converter, inspect the flatbuffer, refuse
float ops left in an INT8 file, then write the file atomically, validating it
against the Keras model before it takes its final name.
"""

import contextlib
import dataclasses
import os
import shutil
import warnings

import numpy as np

from keras_kd import files as _files
from keras_kd import interpreter as _interpreter
from keras_kd.backend import LEGACY_KERAS, keras, tf
from keras_kd.export import _compact
from keras_kd.export._calibration import calibration_arrays, expected_shape, first_inputs, input_specs
from keras_kd.export._evaluate import split_validation_data, validate
from keras_kd.export._inspect import describe_float_op, inspect_tflite, keras_layers_of_tensors
from keras_kd.export._reports import ExportReport, ExportValidationError

#: Accepted values of `to_tflite(quantization=...)`; `None` (or "float32") keeps float32 weights.
QUANTIZATION_MODES = ("int8", "float16", "dynamic", None)
#: Accepted values of `to_tflite(io_dtype=...)`.
IO_DTYPES = ("int8", "uint8", "float32")

DEFAULT_CALIBRATION_SAMPLES = 200


def is_quantization_aware(model):
    """`keras_kd.quantization.is_quantization_aware`, False where that module cannot be imported."""
    try:
        from keras_kd import quantization
    except ImportError:  # the quantization module is optional; without it no model is QAT
        return False
    return bool(quantization.is_quantization_aware(model))


def normalize_quantization(quantization):
    if isinstance(quantization, str) and quantization.lower() in ("int8", "float16", "dynamic", "float32"):
        quantization = quantization.lower()
        return None if quantization == "float32" else quantization
    if quantization is None:
        return None
    raise ValueError(
        f"Unknown quantization {quantization!r}. Expected one of 'int8' (full-integer), 'float16', "
        "'dynamic' (int8 weights, float activations) or None / 'float32' (no quantization)."
    )


def normalize_io_dtype(io_dtype, quantization):
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


def to_tflite(
    model,
    path,
    quantization="int8",
    representative_data=None,
    io_dtype=None,
    allow_select_tf_ops=False,
    validation_data=None,
    min_agreement=0.99,
    num_calibration_samples=DEFAULT_CALIBRATION_SAMPLES,
    allow_float_fallback=False,
    batch_size=None,
    input_shape=None,
    compact=True,
    strip_names=False,
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
        validation_data: `x` or `(x, y)`, with `x` a list of arrays for a model
            with several inputs; when given, the file is run on it and compared
            with the Keras model (see `validate`).
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
        compact: write the flatbuffer again, smaller and computing bit for
            bit the same (True, the default): each repeated array stored once
            (the converter writes a fresh all-zero int64 zero point per output
            channel for every per-channel weight and bias), and each
            intermediate tensor's name cut to the first op of each name scope
            it lists (the converter names a fused op's output after every
            TensorFlow op fused into it); weights and biases lose their names
            where the op reading them names its output. Every Keras layer a
            name listed stays in the file's names, so `compare_layers` and
            the errors read the file as they read the converter's. INT8
            files of mobile networks come out 6-25% smaller (more under
            100 K parameters). False keeps the converter's bytes.
        strip_names: drop the names of the file's intermediate tensors; the
            inputs, outputs and signatures keep theirs. The converter names each
            fused op's output after every TensorFlow op fused into it, and in a
            network under 100 K parameters those names weigh about as much as
            the weights, even cut by `compact`. The file computes bit for bit
            the same. The float-op check and the report read the names before
            they are dropped, but `keras_kd.quantization.compare_layers`
            matches Keras layers to tensors by name (run it on a file written
            without this option), and an XNNPACK preparation error then cannot
            name the layers behind it.

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
    quantization = normalize_quantization(quantization)
    io_dtype = normalize_io_dtype(io_dtype, quantization)
    path = _check_output_path(path)
    _check_numbers(min_agreement, num_calibration_samples, batch_size)
    model = _load_model(model)
    quantization_aware = _check_quantization_aware(model, quantization)
    hint = _shape_hint(input_shape, representative_data, validation_data)
    specs = input_specs(model, None if batch_size is None else int(batch_size), hint)
    calibration = _calibration_data(
        quantization, quantization_aware, representative_data, specs, int(num_calibration_samples)
    )
    content = _run_converter(model, specs, quantization, io_dtype, calibration, allow_select_tf_ops, quantization_aware)
    summary = inspect_tflite(content)  # read with the names the float-op check reports
    if quantization == "int8" and not allow_float_fallback:
        _refuse_float_ops(summary, model)
    content = _repacked(content, compact, strip_names)
    summary = dataclasses.replace(summary, size_bytes=len(content))
    validation = _write_validated(path, content, summary, model, validation_data, min_agreement, quantization)
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


def _repacked(content, compact, strip_names):
    """The converter's bytes written once more: arrays shared with `compact`, names dropped with `strip_names`."""
    if not strip_names:
        return _compact.compact(content) if compact else content
    try:
        return _compact.repack(content, share_arrays=compact, strip_names=True)
    except ValueError as error:
        raise ValueError(f"strip_names=True: the names cannot be dropped: {error}. Pass strip_names=False.") from error


def _check_output_path(path):
    # found before converting (minutes for a large model), not when the file is written
    return _files.check_writable_folder(path, "the output path")


def _check_numbers(min_agreement, num_calibration_samples, batch_size):
    if not 0.0 <= float(min_agreement) <= 1.0:
        raise ValueError(f"min_agreement must be a fraction in [0, 1], got {min_agreement!r}.")
    if int(num_calibration_samples) < 1:
        raise ValueError(f"num_calibration_samples must be a positive integer, got {num_calibration_samples!r}.")
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer or None (dynamic), got {batch_size!r}.")


def _load_model(model):
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No saved model at {path!r}. Pass a keras.Model or the path of a .keras file.")
        from keras_kd.saving import load_model

        return load_model(path, compile=False)
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"model must be a keras.Model or the path of a .keras file, got {type(model).__name__}. "
            "For a Distiller pass distiller.student."
        )
    return model


def _check_quantization_aware(model, quantization):
    """Whether `model` is quantization-aware; refuses what its fake-quant ops make impossible."""
    quantization_aware = is_quantization_aware(model)
    if not quantization_aware:
        return False
    from keras_kd.quantization.quantize import check_exportable

    check_exportable(model)
    if quantization in ("float16", "dynamic"):
        # the converter would read the fake-quant ranges and write an int8 file anyway
        raise ValueError(
            f"quantization={quantization!r} does not apply to a quantization-aware model: its fake-quant ops "
            "make the converter write int8 regardless. Use quantization='int8' (io_dtype='float32' for float "
            "inputs and outputs), or export the float model it was made from."
        )
    if quantization is None:
        # the converter keeps each fake-quant op as a QUANTIZE/DEQUANTIZE pair between float ops
        raise ValueError(
            "quantization=None does not apply to a quantization-aware model: the float32 file would keep its "
            "fake-quant ops as QUANTIZE/DEQUANTIZE pairs around every float op, rounding in float what the "
            "int8 file computes in integers (bigger and slower than either). Use quantization='int8' "
            "(io_dtype='float32' for float inputs and outputs), or export the float model it was made from."
        )
    return True


def _shape_hint(input_shape, representative_data, validation_data):
    """A batch of inputs (or zeros) whose shape tells a model without defined inputs what it takes."""
    if input_shape is not None:
        return np.zeros((1, *tuple(input_shape)), np.float32)
    if representative_data is not None and not isinstance(representative_data, tf.data.Dataset):
        hint = first_inputs(representative_data)
        return None if isinstance(hint, list) else hint
    if validation_data is not None:
        hint = split_validation_data(validation_data)[0]
        return None if isinstance(hint, list) else hint
    return None


def _calibration_data(quantization, quantization_aware, representative_data, specs, num_samples):
    """The checked calibration arrays, None where the conversion needs none."""
    if quantization != "int8":
        return None
    if representative_data is None and not quantization_aware:
        raise ValueError(
            "Post-training INT8 quantization of a float model needs calibration data, but "
            "representative_data is None. Pass representative_data=x_train[:200] (inputs of shape "
            + " / ".join(expected_shape(shape) for _, shape, _ in specs)
            + "), make the model quantization-aware with keras_kd.quantization.quantize_model, "
            "or choose quantization='float16' / 'dynamic' / None."
        )
    if representative_data is None:
        return None
    return calibration_arrays(representative_data, specs, num_samples)


def _run_converter(model, specs, quantization, io_dtype, calibration, allow_select_tf_ops, quantization_aware):
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
                        samples = [array[index : index + 1] for array in calibration]
                        # several inputs are keyed by signature name: a list is matched to the converted
                        # graph's input order, often not the Keras one (each input gets another's range)
                        yield samples if len(samples) == 1 else {f"input_{k}": v for k, v in enumerate(samples)}

                converter.representative_dataset = representative_dataset
            io_type = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[io_dtype]
            converter.inference_input_type = io_type
            converter.inference_output_type = io_type
        try:
            with warnings.catch_warnings():
                # keyed calibration makes the converter open its model in tf.lite.Interpreter, whose
                # deprecation notice is about that internal use, not the user's code
                warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
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


def _converting():
    if LEGACY_KERAS:
        return contextlib.nullcontext()
    from keras_kd.quantization.layers import converting

    return converting()


@contextlib.contextmanager
def _saved_model_dir(model, specs):
    """Exports `model` as a SavedModel with an explicit serving signature; yields the folder."""
    if not getattr(model, "built", True):  # a subclassed model never called: build it on zeros of the given shape
        zeros = [np.zeros([1 if d is None else d for d in shape], dtype) for _, shape, dtype in specs]
        model(zeros[0] if len(zeros) == 1 else zeros, training=False)
    folder = _files.make_temporary_folder("keras_kd_export_")
    try:
        # layers that simulate a rounding the int8 kernel does itself leave it to the kernel
        with _converting():
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


def _error_code_name(error_data):
    try:
        enum = error_data.DESCRIPTOR.enum_types_by_name["ErrorCode"]
        return enum.values_by_number[error_data.error_code].name
    except (AttributeError, KeyError):
        return ""


def _refuse_float_ops(summary, model):
    if summary.float_ops:
        raise ValueError(
            "The INT8 file still computes these ops in float: "
            + "; ".join(describe_float_op(op, summary.float_op_tensors.get(op, []), model)
                        for op in summary.float_ops)
            + ". The converter could not quantize them. Replace those layers with quantizable ones, or accept "
            "a mixed file with to_tflite(..., allow_float_fallback=True)."
        )


def _write_validated(path, content, summary, model, validation_data, min_agreement, quantization):
    """Writes `content` to `path` atomically; with `validation_data`, validates it before the rename.

    Returns:
        The `ValidationResult`, or None without `validation_data`.
    """
    validation = None

    def write(temporary):
        nonlocal validation
        _write_bytes(temporary, content)
        if validation_data is not None:
            validation = _validate_before_rename(
                temporary, path, summary, model, validation_data, min_agreement, quantization
            )

    _files.atomic_write(path, write)
    return validation


def _write_bytes(path, content):
    with open(path, "wb") as stream:
        stream.write(content)
        stream.flush()
        os.fsync(stream.fileno())


def _validate_before_rename(temporary, path, summary, model, validation_data, min_agreement, quantization):
    """Validates the written temporary; a file that fails is moved to `<name>.rejected.tflite` and an error raised."""
    if summary.flex_ops:
        raise ValueError(
            f"The file uses Flex ops ({', '.join(summary.flex_ops)}), which the LiteRT interpreter here "
            "cannot run, so it cannot be validated. Drop validation_data or remove those ops."
        )
    x_val, y_val = split_validation_data(validation_data)
    try:
        validation = validate(model, temporary, x_val, y_val)
    except _interpreter.XNNPackPrepareError as error:
        rejected = _reject(temporary, path)
        raise _unpreparable_error(error, model, quantization, path, rejected) from error
    if validation.agreement < float(min_agreement):
        rejected = _reject(temporary, path)
        raise _disagreement_error(
            # compare_layers reads keras_kd's own QAT layers (Keras 3), not tfmot's
            validation, min_agreement, quantization, path, rejected, is_quantization_aware(model) and not LEGACY_KERAS
        )
    return validation


def _reject(temporary, path):
    """Moves a file that failed validation beside `path` as `<name>.rejected.tflite`; returns that path."""
    root, extension = os.path.splitext(path)
    rejected = f"{root}.rejected{extension or '.tflite'}"
    os.replace(temporary, rejected)
    return rejected


def _unpreparable_error(error, model, quantization, path, rejected):
    layers = keras_layers_of_tensors([problem["tensor"] for problem in error.problems], model)
    return _interpreter.XNNPackPrepareError(
        f"XNNPACK, LiteRT's default CPU delegate, could not prepare the {quantization or 'float32'} "
        f"file converted from {model.name!r}, so it could not be validated. "
        + (f"Keras layers behind it: {', '.join(repr(layer) for layer in layers)}. " if layers else "")
        + error.explanation
        + f" The file was not written to {path!r}; it is kept as {rejected!r} for inspection.",
        error.problems,
        error.explanation,
    )


def _disagreement_error(validation, min_agreement, quantization, path, rejected, quantization_aware=False):
    accuracy = ""
    if validation.keras_accuracy is not None:
        accuracy = f" (accuracy: Keras {validation.keras_accuracy:.4f}, TFLite {validation.tflite_accuracy:.4f})"
    return ExportValidationError(
        f"The {quantization or 'float32'} .tflite file agrees with the Keras model on only "
        f"{validation.agreement:.2%} of {validation.num_samples} validation samples, below "
        f"min_agreement={float(min_agreement):.2%}{accuracy}; max |diff| {validation.max_abs_diff:.4g}, "
        f"mean |diff| {validation.mean_abs_diff:.4g}. The file was not written to {path!r}; it is kept "
        f"as {rejected!r}. To fix: calibrate on more representative data (more samples, preprocessed "
        "like training), train with quantization-aware training (keras_kd.quantization), use "
        "quantization='float16', or lower min_agreement if this gap is acceptable."
        + (f" To find the layer the file computes differently: keras_kd.quantization.compare_layers(model, "
           f"{rejected!r}, x_val), the first row whose local_max_steps is above 1."
           if quantization_aware else ""),
        result=validation,
        rejected_path=rejected,
    )
