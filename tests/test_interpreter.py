"""keras_kd.interpreter: loading a .tflite file and moving data in and out of it, checked directly."""

import numpy as np
import pytest

from keras_kd import interpreter as interpreter_module
from keras_kd.interpreter import (
    dequantize_output,
    input_details,
    interpreter_backend,
    load_interpreter,
    output_details,
    quantize_input,
)

INT8 = {"dtype": np.int8, "quantization": (0.5, -3)}


def test_quantize_input_rounds_with_the_tensors_scale_and_zero_point_and_clips():
    # q = clip(round(x / 0.5) - 3): 1.0 -> -1, -0.74 -> round(-1.48) - 3 = -4, the ends clip to the int8 range
    quantized = quantize_input([1.0, -0.74, 1000.0, -1000.0], INT8)
    assert quantized.dtype == np.int8
    assert quantized.tolist() == [-1, -4, 127, -128]


def test_quantize_input_casts_float_and_unquantized_integer_inputs():
    assert quantize_input([1.5], {"dtype": np.float32, "quantization": (0.0, 0)}).dtype == np.float32
    ids = quantize_input([3, 7], {"dtype": np.int32, "quantization": (0.0, 0)})
    assert ids.dtype == np.int32 and ids.tolist() == [3, 7]


def test_dequantize_output_inverts_quantize_input_within_half_a_step():
    values = np.linspace(-60.0, 60.0, 41)
    restored = dequantize_output(quantize_input(values, INT8), INT8)
    assert restored.dtype == np.float32
    np.testing.assert_allclose(restored, values, atol=0.25)  # half of the 0.5 scale
    assert dequantize_output(np.array([2.5]), {"dtype": np.float32, "quantization": (0.0, 0)}).tolist() == [2.5]


def test_interpreter_backend_is_litert():
    assert interpreter_backend() == "ai_edge_litert"


def test_no_interpreter_package_names_the_install(monkeypatch):
    monkeypatch.setattr(interpreter_module, "_interpreter_classes", lambda: iter(()))
    with pytest.raises(ImportError, match="pip install ai-edge-litert"):
        interpreter_backend()
    with pytest.raises(ImportError, match="pip install ai-edge-litert"):
        load_interpreter(b"not read")


def test_bad_inputs_say_what_was_passed(tmp_path):
    missing = tmp_path / "missing.tflite"
    with pytest.raises(FileNotFoundError, match="No .tflite file at .*missing.tflite"):
        load_interpreter(missing)
    with pytest.raises(ValueError, match="Could not load the TFLite model"):
        load_interpreter(b"this is not a flatbuffer")


@pytest.fixture(scope="module")
def float_file(tmp_path_factory):
    from keras_kd.backend import keras
    from keras_kd.export import to_tflite

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, kernel_initializer="ones")])
    path = str(tmp_path_factory.mktemp("interpreter") / "dense.tflite")
    to_tflite(model, path, quantization=None)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("options", [{}, {"num_threads": 1, "use_xnnpack": False}, {"preserve_all_tensors": True}])
def test_a_file_or_its_bytes_loads_allocated_and_runs(float_file, options):
    with open(float_file, "rb") as handle:
        content = handle.read()
    for model in (float_file, content):
        interpreter = load_interpreter(model, **options)
        (detail,), (out,) = input_details(interpreter), output_details(interpreter)
        assert list(detail["shape"]) == [1, 4] and list(out["shape"]) == [1, 2]
        interpreter.set_tensor(detail["index"], quantize_input([[1.0, 2.0, 3.0, 4.0]], detail))
        interpreter.invoke()
        np.testing.assert_array_equal(dequantize_output(interpreter.get_tensor(out["index"]), out), [[10.0, 10.0]])
    assert interpreter_module.requantization_problems(content) == []  # a float file: no scales to check


@pytest.mark.slow
def test_num_threads_is_validated(float_file):
    with pytest.raises(ValueError, match="num_threads must be a positive integer or None, got 0"):
        load_interpreter(float_file, num_threads=0)


@pytest.mark.slow
def test_every_tensor_stays_readable_on_xnnpack(tmp_path, rng):
    from keras_kd.backend import LEGACY_KERAS, keras
    from tests.helpers import calibrated_int8_file

    if LEGACY_KERAS:
        pytest.skip("keras_kd's QAT layers are Keras 3 only")
    inputs = keras.Input((8, 8, 3))
    hidden = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    outputs = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D(name="gap")(hidden))
    x = rng.normal(size=(8, 8, 8, 3)).astype("float32")
    path = str(tmp_path / "int8.tflite")
    calibrated_int8_file(keras.Model(inputs, outputs), x, path)

    def run(interpreter):
        (detail,) = input_details(interpreter)
        interpreter.resize_tensor_input(detail["index"], x.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(detail["index"], quantize_input(x, detail))
        interpreter.invoke()
        return interpreter

    plain = run(load_interpreter(path))
    kept = run(load_interpreter(path, preserve_all_tensors=True))
    builtin = run(load_interpreter(path, use_xnnpack=False, preserve_all_tensors=True))
    # the signature's output only, and the same values: the copy runs the same ops on XNNPACK
    assert [d["name"] for d in output_details(kept)] == [d["name"] for d in output_details(plain)]
    assert len(kept.get_output_details()) > 1
    (out,) = output_details(plain)
    np.testing.assert_array_equal(kept.get_tensor(output_details(kept)[0]["index"]), plain.get_tensor(out["index"]))
    # an intermediate tensor is readable on both kernel sets, and they agree within a step
    (conv,) = [d["index"] for d in kept.get_tensor_details() if "conv" in d["name"] and d["shape"][-1] == 8
               and len(d["shape"]) == 4]
    on_xnnpack, on_builtin = kept.get_tensor(conv).astype(int), builtin.get_tensor(conv).astype(int)
    assert on_xnnpack.std() > 0 and np.abs(on_xnnpack - on_builtin).max() <= 1
    with pytest.raises(ValueError, match="Could not load the TFLite model"):
        load_interpreter(b"this is not a flatbuffer", preserve_all_tensors=True)
