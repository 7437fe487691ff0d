"""Tests for keras_kd.export: conversion, the flatbuffer report, running and validating files, the callback."""

import glob
import json
import os
import re
import warnings

import numpy as np
import pytest

from keras_kd import export, interpreter
from keras_kd.export import _calibration, _convert
from keras_kd.backend import LEGACY_KERAS, keras, tf


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    y = data.target.astype("int64")
    return x[:600], y[:600], x[600:800], y[600:800]


def _small_cnn(hidden=None):
    layers = [
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
    ]
    if hidden:
        layers.append(keras.layers.Dense(hidden, activation="relu"))
    layers.append(keras.layers.Dense(10))
    return keras.Sequential(layers)


@pytest.fixture(scope="module")
def trained(digits):
    x, y, _, _ = digits
    keras.utils.set_random_seed(7)
    model = _small_cnn()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=12, batch_size=32, verbose=0)
    return model


# --------------------------------------------------------------------------- argument errors (fast)


def test_public_surface_is_pinned():
    assert sorted(export.__all__) == sorted(
        [
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
    )


def test_unknown_quantization_names_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown quantization 'int4'.*'int8'.*'float16'.*'dynamic'"):
        export.to_tflite(_small_cnn(), tmp_path / "m.tflite", quantization="int4")


def test_unknown_io_dtype_names_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown io_dtype 'int16'.*'int8', 'uint8' or 'float32'"):
        export.to_tflite(_small_cnn(), tmp_path / "m.tflite", io_dtype="int16")


def test_integer_io_needs_int8_quantization(tmp_path):
    with pytest.raises(ValueError, match=r"io_dtype='uint8' needs quantization='int8'.*'float16'"):
        export.to_tflite(_small_cnn(), tmp_path / "m.tflite", quantization="float16", io_dtype="uint8")


def test_missing_folder_is_named(tmp_path):
    target = tmp_path / "no_such_folder" / "m.tflite"
    with pytest.raises(FileNotFoundError, match=r"no_such_folder.*does not exist.*os\.makedirs"):
        export.to_tflite(_small_cnn(), target, quantization=None)
    assert not target.parent.exists()


def test_int8_of_float_model_needs_calibration_data(tmp_path):
    expected = r"needs calibration data.*representative_data is None.*\(num_samples, 8, 8, 1\)"
    with pytest.raises(ValueError, match=expected):
        export.to_tflite(_small_cnn(), tmp_path / "m.tflite")
    assert not os.listdir(tmp_path)


def test_empty_calibration_data_is_refused(tmp_path):
    empty = np.zeros((0, 8, 8, 1), "float32")
    with pytest.raises(ValueError, match=r"representative_data is empty.*\(num_samples, 8, 8, 1\)"):
        export.to_tflite(_small_cnn(), tmp_path / "m.tflite", representative_data=empty)


def test_wrongly_shaped_calibration_data_names_the_expected_shape(tmp_path, digits):
    x = digits[0][..., 0]  # the channel axis forgotten
    with pytest.raises(ValueError, match=r"shape \(600, 8, 8\) but input .* expects \(num_samples, 8, 8, 1\)"):
        export.to_tflite(_small_cnn(), tmp_path / "m.tflite", representative_data=x)


def test_wrongly_typed_calibration_data_is_refused(tmp_path):
    strings = np.full((4, 8, 8, 1), "a")
    expected = r"dtype <U1 but input .* takes float32 values of shape \(num_samples, 8, 8, 1\)"
    with pytest.raises(ValueError, match=expected):
        export.to_tflite(_small_cnn(), tmp_path / "m.tflite", representative_data=strings)


def test_calibration_tuple_of_x_y_uses_x():
    specs = [("input", [None, 8, 8, 1], "float32")]
    x = np.ones((300, 8, 8, 1), "float64")
    arrays = _calibration.calibration_arrays((x, np.zeros(300)), specs, num_samples=50)
    assert len(arrays) == 1 and arrays[0].shape == (50, 8, 8, 1) and arrays[0].dtype == np.float32


def test_calibration_from_a_batched_dataset_is_spread_and_checked():
    specs = [("input", [None, 5], "float32")]
    x = np.arange(50 * 5, dtype="float64").reshape(50, 5)
    dataset = tf.data.Dataset.from_tensor_slices((x, np.zeros(50))).batch(8)
    (arrays,) = _calibration.calibration_arrays(dataset, specs, num_samples=20)
    assert arrays.shape == (20, 5) and arrays.dtype == np.float32
    unbatched = tf.data.Dataset.from_tensor_slices(x)
    assert _calibration.calibration_arrays(unbatched, specs, num_samples=3)[0].shape == (3, 5)
    with pytest.raises(ValueError, match=r"shape \(24, 4\) but input 'input' expects \(num_samples, 5\)"):
        _calibration.calibration_arrays(dataset.map(lambda a, b: a[:, :4]), specs, num_samples=20)


class SubclassedStudent(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(3)

    def call(self, inputs):
        return self.dense(inputs)


@pytest.mark.slow
def test_subclassed_model_shape_from_its_first_call_or_input_shape(tmp_path):
    x = np.random.default_rng(0).random((20, 5), dtype=np.float32)
    with pytest.raises(ValueError, match=r"SubclassedStudent has no defined inputs.*input_shape=\(\.\.\.\)"):
        export.to_tflite(SubclassedStudent(), tmp_path / "m.tflite", quantization=None)
    report = export.to_tflite(SubclassedStudent(), tmp_path / "m.tflite", quantization=None, input_shape=(5,))
    assert report.inputs[0].shape_signature == [-1, 5]
    called = SubclassedStudent()
    called(x[:2])
    report = export.to_tflite(
        called, tmp_path / "c.tflite", representative_data=x, validation_data=x, min_agreement=0.9
    )
    assert report.input_dtype == "int8" and report.float_ops == []


def test_inspect_refuses_a_file_that_is_not_tflite(tmp_path):
    bogus = tmp_path / "bogus.tflite"
    bogus.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(ValueError, match="not a TFLite flatbuffer"):
        export.inspect_tflite(bogus)
    with pytest.raises(FileNotFoundError, match="No .tflite file"):
        export.inspect_tflite(tmp_path / "missing.tflite")


def test_callback_validates_its_arguments():
    with pytest.raises(ValueError, match="every_n_epochs must be a positive integer"):
        export.TFLiteEvalCallback(np.zeros((2, 8, 8, 1)), every_n_epochs=0)
    with pytest.raises(ValueError, match="validation_data is empty"):
        export.TFLiteEvalCallback(np.zeros((0, 8, 8, 1)))


# --------------------------------------------------------------------------- conversion (slow)


@pytest.mark.slow
def test_post_training_int8_is_fully_integer(tmp_path, trained, digits):
    x, _, x_val, y_val = digits
    report = export.to_tflite(
        trained, tmp_path / "m.tflite", representative_data=x, validation_data=(x_val, y_val), min_agreement=0.95
    )
    assert report.path == str(tmp_path / "m.tflite") and os.path.getsize(report.path) == report.size_bytes
    assert report.quantization == "int8" and report.quantization_aware is False
    assert report.input_dtype == "int8" and report.output_dtype == "int8"
    assert report.inputs[0].shape_signature == [-1, 8, 8, 1]
    assert report.inputs[0].scale > 0 and isinstance(report.inputs[0].zero_point, int)
    assert report.float_ops == [] and report.custom_ops == []
    assert {"CONV_2D", "MAX_POOL_2D", "FULLY_CONNECTED"} <= set(report.op_counts)
    assert "QUANTIZE" not in report.op_counts and "DEQUANTIZE" not in report.op_counts
    assert report.validation.agreement >= 0.95
    assert report.validation.tflite_accuracy is not None
    assert json.loads(json.dumps(report.to_dict()))["validation"]["num_samples"] == len(x_val)
    assert glob.glob(str(tmp_path / "*")) == [report.path]  # no temp file left


@pytest.mark.slow
def test_float_io_int8_and_fixed_batch_uint8(tmp_path, trained, digits):
    x, _, x_val, y_val = digits
    float_io = export.to_tflite(trained, tmp_path / "f.tflite", representative_data=x, io_dtype="float32")
    assert float_io.input_dtype == "float32" and float_io.float_ops == []
    assert float_io.op_counts["QUANTIZE"] == 1 and float_io.op_counts["DEQUANTIZE"] == 1
    uint8 = export.to_tflite(trained, tmp_path / "u.tflite", representative_data=x, io_dtype="uint8", batch_size=1)
    assert uint8.input_dtype == "uint8" and uint8.inputs[0].shape_signature == [1, 8, 8, 1]
    # a batch-1 file is run by looping; it must give what the dynamic-batch file gives
    looped = export.evaluate_tflite(uint8.path, x_val[:37], y_val[:37])
    batched = export.evaluate_tflite(float_io.path, x_val[:37], y_val[:37], batch_size=16)
    assert looped.predictions.shape == batched.predictions.shape == (37, 10)
    assert np.mean(np.argmax(looped.predictions, -1) == np.argmax(batched.predictions, -1)) >= 0.9


@pytest.mark.slow
def test_float32_file_agrees_with_keras_and_float16_is_half_the_size(tmp_path, digits):
    x, y, x_val, y_val = digits
    model = _small_cnn(hidden=256)  # weights dominate the file, so the size ratio is visible
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=1, verbose=0)
    float32 = export.to_tflite(model, tmp_path / "f32.tflite", quantization=None)
    float16 = export.to_tflite(model, tmp_path / "f16.tflite", quantization="float16")
    assert float32.quantization is None and float32.input_dtype == "float32"
    assert {"CONV_2D", "FULLY_CONNECTED"} <= set(float32.float_ops)
    assert 0.45 < float16.size_bytes / float32.size_bytes < 0.6
    result = export.validate(model, float32.path, x_val, y_val)
    assert result.agreement == 1.0
    assert result.keras_accuracy == pytest.approx(result.tflite_accuracy)
    assert result.max_abs_diff < 1e-4 and result.num_samples == len(x_val)
    dynamic = export.to_tflite(model, tmp_path / "dyn.tflite", quantization="dynamic")
    assert dynamic.size_bytes < 0.4 * float32.size_bytes


@pytest.mark.slow
def test_evaluate_accuracy_is_the_argmax_of_its_own_predictions(tmp_path, trained, digits, monkeypatch):
    x, _, x_val, y_val = digits
    path = export.to_tflite(trained, tmp_path / "m.tflite", representative_data=x).path
    result = export.evaluate_tflite(path, x_val, y_val, batch_size=64)
    assert result.predictions.dtype == np.float32 and result.num_samples == len(x_val)
    assert result.accuracy == pytest.approx(np.mean(np.argmax(result.predictions, -1) == y_val))
    one_hot = np.eye(10)[y_val]
    assert export.evaluate_tflite(path, x_val, one_hot).accuracy == pytest.approx(result.accuracy)
    assert export.evaluate_tflite(path, x_val).accuracy is None
    with pytest.raises(ValueError, match=r"expects \(num_samples, 8, 8, 1\)"):
        export.evaluate_tflite(path, x_val[..., 0])
    # TFLite's builtin kernels instead of XNNPACK: the same file, rounded differently by at most an int8 step or two
    seen = []
    real_load = interpreter.load_interpreter
    monkeypatch.setattr(interpreter, "load_interpreter",
                        lambda *a, **k: seen.append(k.get("use_xnnpack")) or real_load(*a, **k))
    builtin = export.evaluate_tflite(path, x_val, y_val, batch_size=64, use_xnnpack=False)
    assert seen == [False]
    scale = interpreter.output_details(real_load(path))[0]["quantization"][0]
    assert np.max(np.abs(builtin.predictions - result.predictions)) <= 2 * scale + 1e-6


@pytest.mark.slow
def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path, trained, monkeypatch):
    target = tmp_path / "m.tflite"
    target.write_bytes(b"the previous, complete export")

    def crash(_fd):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "fsync", crash)  # fails after the bytes went to the temp file
    with pytest.raises(OSError, match="simulated"):
        export.to_tflite(trained, target, quantization=None)
    assert target.read_bytes() == b"the previous, complete export"
    assert sorted(os.listdir(tmp_path)) == ["m.tflite"]
    monkeypatch.undo()
    report = export.to_tflite(trained, target, quantization=None)  # a complete export does replace it
    assert target.read_bytes()[4:8] == b"TFL3" and report.size_bytes == target.stat().st_size


@pytest.mark.slow
def test_low_agreement_is_rejected_and_kept_beside(tmp_path, trained, digits):
    x, _, x_val, y_val = digits
    target = tmp_path / "m.tflite"
    target.write_bytes(b"old")
    # calibrating on data scaled unlike the training data: activations saturate
    expected = r"agrees with the Keras model on only .*below min_agreement=99\.00%.*representative data"
    with pytest.raises(export.ExportValidationError, match=expected) as caught:
        export.to_tflite(trained, target, representative_data=x * 0.01, validation_data=(x_val, y_val))
    assert caught.value.result.agreement < 0.99
    assert "compare_layers" not in str(caught.value)  # a float model: no QAT layers to compare
    assert target.read_bytes() == b"old"
    assert caught.value.rejected_path == str(tmp_path / "m.rejected.tflite")
    assert sorted(os.listdir(tmp_path)) == ["m.rejected.tflite", "m.tflite"]


def test_a_quantization_aware_models_disagreement_points_at_compare_layers():
    from keras_kd.export._convert import _disagreement_error
    from keras_kd.export._reports import ValidationResult

    result = ValidationResult(0.9, None, None, 1.0, 0.1, 100)
    error = _disagreement_error(result, 0.99, "int8", "m.tflite", "m.rejected.tflite", quantization_aware=True)
    assert re.search(r"compare_layers\(model, 'm\.rejected\.tflite', x_val\).*local_max_steps is above 1", str(error))


class _Roll(keras.layers.Layer):
    def call(self, inputs):
        return tf.roll(inputs, shift=1, axis=1)


@pytest.mark.slow
def test_flex_ops_need_an_explicit_opt_in(tmp_path):
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(6), _Roll(), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match=r"no builtin TFLite kernel: tf\.Roll.*allow_select_tf_ops=True"):
        export.to_tflite(model, tmp_path / "m.tflite", quantization=None)
    assert not os.listdir(tmp_path)
    report = export.to_tflite(model, tmp_path / "m.tflite", quantization=None, allow_select_tf_ops=True)
    assert "FlexRoll" in report.custom_ops
    assert export.inspect_tflite(report.path).flex_ops == ["FlexRoll"]


@pytest.mark.slow
def test_a_keras_file_path_is_accepted(tmp_path, trained, digits):
    saved = tmp_path / "student.keras"
    trained.save(saved)
    report = export.to_tflite(str(saved), tmp_path / "m.tflite", quantization=None)
    assert export.validate(trained, report.path, digits[2]).agreement == 1.0


@pytest.mark.slow
def test_callback_logs_tflite_accuracy_for_checkpointing(tmp_path, digits):
    x, y, x_val, y_val = digits
    model = _small_cnn()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = export.TFLiteEvalCallback((x_val, y_val), representative_data=x[:100])
    checkpoint = keras.callbacks.ModelCheckpoint(
        str(tmp_path / "best.keras"), monitor="val_tflite_accuracy", mode="max", save_best_only=True
    )
    history = model.fit(x, y, epochs=2, batch_size=64, verbose=0, callbacks=[callback, checkpoint])
    assert len(history.history["val_tflite_accuracy"]) == 2
    assert all(0.0 <= a <= 1.0 for a in history.history["val_tflite_accuracy"])
    assert all(a >= 0.9 for a in history.history["val_tflite_agreement"])
    assert (tmp_path / "best.keras").exists()
    assert [epoch for epoch, _ in callback.history] == [0, 1]
    # the figure is the real file's: converting the final model gives the last epoch's accuracy
    final = export.to_tflite(model, tmp_path / "final.tflite", representative_data=x[:100])
    final_accuracy = export.evaluate_tflite(final.path, x_val, y_val).accuracy
    assert final_accuracy == pytest.approx(history.history["val_tflite_accuracy"][-1])


@pytest.mark.slow
def test_callback_converts_the_student_of_a_distiller(digits):
    from keras_kd.distiller import Distiller

    x, y, x_val, y_val = digits
    teacher = _small_cnn(hidden=32)
    teacher.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(x, y, epochs=1, verbose=0)
    student = _small_cnn()
    distiller = Distiller(teacher=teacher, student=student)
    distiller.compile(optimizer="adam", alpha=0.5, temperature=4.0)
    callback = export.TFLiteEvalCallback((x_val, y_val), every_n_epochs=2, quantization="float16")
    history = distiller.fit(x, y, epochs=2, batch_size=64, verbose=0, callbacks=[callback])
    assert callback._target_model() is student
    assert len(history.history["val_tflite_accuracy"]) == 1  # only the second epoch is evaluated
    assert history.history["val_tflite_agreement"] == [1.0]


@pytest.mark.slow
@pytest.mark.legacy_keras
def test_conversion_under_the_keras_in_use(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((64, 8, 8, 1), dtype=np.float32)
    model = _small_cnn()
    float32 = export.to_tflite(model, tmp_path / "f.tflite", quantization=None, validation_data=x)
    assert float32.validation.agreement == 1.0
    int8 = export.to_tflite(model, tmp_path / "q.tflite", representative_data=x, validation_data=x, min_agreement=0.8)
    assert int8.input_dtype == "int8" and int8.float_ops == []
    assert LEGACY_KERAS == (keras.__version__.split(".")[0] == "2")


@pytest.mark.slow
def test_quantization_aware_model_exports_int8_without_calibration(tmp_path, trained, digits):
    from keras_kd.quantization import quantize_model

    x, y, x_val, y_val = digits
    qat = quantize_model(trained)
    qat.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(x, y, epochs=1, batch_size=32, verbose=0)
    with pytest.raises(ValueError, match=r"quantization='float16' does not apply to a quantization-aware model"):
        export.to_tflite(qat, tmp_path / "qat.tflite", quantization="float16")
    with pytest.raises(ValueError, match=r"quantization=None does not apply .*QUANTIZE/DEQUANTIZE pairs"):
        export.to_tflite(qat, tmp_path / "qat.tflite", quantization=None)
    assert not (tmp_path / "qat.tflite").exists()
    report = export.to_tflite(qat, tmp_path / "qat.tflite", validation_data=(x_val, y_val))
    assert report.quantization_aware is True
    assert report.input_dtype == "int8" and report.output_dtype == "int8"
    assert report.float_ops == [] and {"CONV_2D", "FULLY_CONNECTED"} <= set(report.op_counts)
    # the fake-quant ops simulate the int8 kernels, so the file follows its Keras model closely
    assert report.validation.agreement >= 0.99
    accuracy = export.evaluate_tflite(report.path, x_val, y_val).accuracy
    assert accuracy == pytest.approx(report.validation.tflite_accuracy)


# --------------------------------------------------------------------------- issue 11 items 10-11, issue 9 item 4


def test_non_finite_calibration_data_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(_convert, "_run_converter", lambda *a, **k: pytest.fail("converted despite NaN calibration data"))
    x = np.random.default_rng(0).random((20, 8, 8, 1)).astype("float32")
    x[5, 3, 3, 0] = np.nan
    x[9, 0, 0, 0] = np.inf
    expected = r"representative_data for input .* non-finite values \(NaN or inf\): 2 of its 20 samples, the first at index 5"
    with pytest.raises(ValueError, match=expected):
        export.to_tflite(_small_cnn(), tmp_path / "m.tflite", representative_data=x)
    assert not os.listdir(tmp_path)


def test_an_unwritable_output_folder_is_found_before_converting(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(_convert, "_run_converter", lambda *a, **k: pytest.fail("converted before checking the folder"))

    def refuse(*args, **kwargs):
        raise PermissionError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError, match=r"Cannot write the output path .*m\.tflite.*Read-only file system"):
        export.to_tflite(_small_cnn(), tmp_path / "m.tflite", quantization=None)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_found_before_converting(tmp_path, monkeypatch):
    monkeypatch.setattr(_convert, "_run_converter", lambda *a, **k: pytest.fail("converted before checking the folder"))
    folder = tmp_path / "ro"
    folder.mkdir()
    os.chmod(folder, 0o555)
    try:
        with pytest.raises(PermissionError, match="no file can be created in"):
            export.to_tflite(_small_cnn(), folder / "m.tflite", quantization=None)
    finally:
        os.chmod(folder, 0o755)


def test_layers_are_found_from_tflite_tensor_names():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="inner_dense")], name="block")
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2, name="head")(inner(inputs))
    model = keras.Model(inputs, outputs, name="net")
    prefix = "net" if LEGACY_KERAS else "net_1"
    suffix = "" if LEGACY_KERAS else "_1"
    names = [f"{prefix}/block{suffix}/inner_dense{suffix}/MatMul;{prefix}/block{suffix}/inner_dense{suffix}/BiasAdd",
             f"{prefix}/head{suffix}/Sin", "tfl.dequantize", "StatefulPartitionedCall:0"]
    assert export.keras_layers_of_tensors(names, model) == ["block/inner_dense", "head"]


@pytest.fixture(scope="module")
def small_tflite(tmp_path_factory):
    path = tmp_path_factory.mktemp("small") / "small.tflite"
    export.to_tflite(_small_cnn(), path, quantization=None)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("keep", [0.5, 0.98, 40])
def test_inspect_says_a_truncated_file_is_truncated(small_tflite, tmp_path, keep):
    content = small_tflite.read_bytes()
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(content[: int(len(content) * keep) if keep < 1 else keep])
    with pytest.raises(ValueError, match=r"cut\.tflite' is truncated or corrupt.*Export it again"):
        export.inspect_tflite(cut)


@pytest.mark.slow
def test_written_files_get_the_umask_permissions(tmp_path):
    previous = os.umask(0o022)
    try:
        stale = tmp_path / ".m.tflite.999999999.abcdefgh.tmp.tflite"  # a killed export's temporary (no such pid)
        stale.write_bytes(b"\0" * 4096)
        report = export.to_tflite(_small_cnn(), tmp_path / "m.tflite", quantization=None)
    finally:
        os.umask(previous)
    assert oct(os.stat(report.path).st_mode & 0o777) == oct(0o644)
    assert os.listdir(tmp_path) == ["m.tflite"]


class _Sine(keras.layers.Layer):
    def call(self, inputs):
        return keras.ops.sin(inputs) if not LEGACY_KERAS else tf.sin(inputs)


@pytest.mark.slow
def test_strict_int8_error_names_the_keras_layers_behind_float_ops(tmp_path):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten(name="flat")(keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs))
    x = _Sine(name="my_sine")(keras.layers.Dense(16, name="fc")(x))
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name="net")
    x = np.random.default_rng(0).random((40, 8, 8, 1)).astype("float32")
    expected = r"still computes these ops in float: SIN \(from Keras layer 'my_sine'; model\.get_layer\('my_sine'\)\)"
    with pytest.raises(ValueError, match=expected):
        export.to_tflite(model, tmp_path / "m.tflite", representative_data=x)
    summary = export.to_tflite(model, tmp_path / "m.tflite", representative_data=x, allow_float_fallback=True)
    assert summary.float_ops == ["SIN"]


def _se_student_with_a_dead_squeeze():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    s = keras.layers.GlobalAveragePooling2D(name="se_pool")(x)
    # a bias far below any pre-activation: ReLU gives exactly 0, calibration a range of 0
    s = keras.layers.Dense(2, activation="relu", name="se_squeeze",
                           bias_initializer=keras.initializers.Constant(-100.0))(s)
    s = keras.layers.Reshape((1, 1, 8), name="se_reshape")(keras.layers.Dense(8, activation="sigmoid",
                                                                              name="se_expand")(s))
    x = keras.layers.Flatten(name="flat")(keras.layers.Multiply(name="se_scale")([x, s]))
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name="net")


@pytest.mark.slow
def test_a_file_xnnpack_cannot_prepare_is_explained(tmp_path):
    from keras_kd.interpreter import XNNPackPrepareError, load_interpreter

    keras.utils.set_random_seed(3)
    model = _se_student_with_a_dead_squeeze()
    x = np.random.default_rng(0).random((40, 8, 8, 1)).astype("float32")
    target = tmp_path / "se.tflite"
    expected = (r"XNNPACK.*could not prepare the int8 file converted from 'net'.*Keras layers behind it: 'se_squeeze'"
                r".*FULLY_CONNECTED writing '[^']*se_squeeze[^']*' \(output scale [0-9.]+e-0[89].*ratio"
                r".*all-zero squeeze channel.*To fix: calibrate.*floor on tiny activation ranges"
                r".*kept as .*se\.rejected\.tflite")
    with pytest.raises(XNNPackPrepareError, match=expected) as caught:
        export.to_tflite(model, target, representative_data=x, validation_data=x)
    assert caught.value.problems[0]["ratio"] >= 256
    assert sorted(os.listdir(tmp_path)) == ["se.rejected.tflite"]
    rejected = str(tmp_path / "se.rejected.tflite")
    with pytest.raises(XNNPackPrepareError, match=r"could not prepare '.*se\.rejected\.tflite'.*se_squeeze"):
        load_interpreter(rejected)
    load_interpreter(rejected, use_xnnpack=False)  # the builtin kernels run it


def _two_input_model():
    """Two inputs of one shape but different ranges: fed in the wrong order, the INT8 file would disagree."""
    small, large = keras.Input((8,), name="small"), keras.Input((8,), name="large")
    joined = keras.layers.Concatenate()([keras.layers.Dense(16, activation="relu")(small), large])
    return keras.Model([small, large], keras.layers.Dense(10)(joined))


@pytest.mark.slow
def test_a_two_input_file_is_validated_and_evaluated_input_by_input(tmp_path):
    keras.utils.set_random_seed(1)
    model = _two_input_model()
    rng = np.random.RandomState(0)
    small = rng.uniform(0, 1, (300, 8)).astype("float32")
    large = rng.uniform(0, 20, (300, 8)).astype("float32")
    y = np.argmax(model.predict([small, large], verbose=0), -1)
    report = export.to_tflite(
        model, tmp_path / "two.tflite", representative_data=[small, large], validation_data=([small, large], y)
    )
    assert [tensor.dtype for tensor in report.inputs] == ["int8", "int8"]
    # in the Keras order, each with its own input's range (the file lists them the other way round)
    assert [tensor.name for tensor in report.inputs] == ["serving_default_input_0:0", "serving_default_input_1:0"]
    assert report.inputs[0].scale == pytest.approx(1 / 255, rel=0.05)
    assert report.inputs[1].scale == pytest.approx(20 / 255, rel=0.05)
    assert report.validation.agreement >= 0.95 and report.validation.num_samples == 300
    evaluated = export.evaluate_tflite(report.path, [small, large], y, batch_size=64)
    assert evaluated.predictions.shape == (300, 10) and evaluated.accuracy == report.validation.tflite_accuracy
    swapped = export.validate(model, report.path, [large, small], y)  # the order is the Keras model's
    assert swapped.agreement < report.validation.agreement - 0.2
    with pytest.raises(ValueError, match=r"has 2 inputs but x holds 1 array"):
        export.evaluate_tflite(report.path, small)
    with pytest.raises(ValueError, match=r"x\[1\] has shape \(300, 4\) but the .tflite file expects"):
        export.evaluate_tflite(report.path, [small, large[:, :4]])
    with pytest.raises(ValueError, match="different numbers of samples"):
        export.evaluate_tflite(report.path, [small, large[:10]])


def test_validation_warns_when_the_model_predicts_one_class_for_every_input(tmp_path):
    # a model whose head outputs a constant: agreement 1.0 on any file, which says nothing about the file
    model = _small_cnn()
    head = model.layers[-1]
    head.set_weights([np.zeros_like(head.get_weights()[0]), np.arange(10, dtype="float32")])
    x = np.random.RandomState(0).uniform(0, 1, (16, 8, 8, 1)).astype("float32")
    path = tmp_path / "f.tflite"
    export.to_tflite(model, path, quantization=None)
    with pytest.warns(UserWarning, match=r"predicts class 9 for every one of the 16 validation inputs"):
        result = export.validate(model, path, x)
    assert result.agreement == 1.0
    keras.utils.set_random_seed(1)
    trained_like = _small_cnn()
    assert len(set(np.argmax(trained_like.predict(x, verbose=0), -1))) > 1  # it tells some inputs apart
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        export.validate(trained_like, export.to_tflite(trained_like, tmp_path / "g.tflite", quantization=None).path, x)
