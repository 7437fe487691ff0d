"""quantize_model under tf_keras (TF_USE_LEGACY_KERAS=1): delegation to tensorflow-model-optimization.

These run only in the legacy run (`TF_USE_LEGACY_KERAS=1 python -m pytest -m legacy_keras`).
"""

import sys
import warnings

import numpy as np
import pytest

from keras_kd.backend import LEGACY_KERAS, keras, tf
from keras_kd.quantization import float_layers, is_quantization_aware, quantize_model

pytestmark = [
    pytest.mark.legacy_keras,
    pytest.mark.skipif(not LEGACY_KERAS, reason="tfmot path: only under TF_USE_LEGACY_KERAS=1"),
]


def _cnn():
    layers = keras.layers
    return keras.Sequential(
        [
            layers.InputLayer(input_shape=(8, 8, 1)),
            layers.Conv2D(8, 3, padding="same", use_bias=False),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(10),
        ]
    )


def test_quantize_model_uses_tfmot_and_is_quantization_aware():
    model = _cnn()
    qat = quantize_model(model)
    assert is_quantization_aware(qat) and not is_quantization_aware(model)
    assert any(type(layer).__module__.startswith("tensorflow_model_optimization") for layer in qat.layers)
    assert float_layers(qat) == []


def test_unsupported_layer_error_and_float_mode():
    layers = keras.layers
    model = keras.Sequential(
        [
            layers.InputLayer(input_shape=(6,)),
            layers.Dense(4),
            layers.LayerNormalization(name="my_norm"),
            layers.Dense(2),
        ]
    )
    with pytest.raises(ValueError, match=r"1 x LayerNormalization \('my_norm'\)"):
        quantize_model(model)
    with pytest.raises(ValueError, match="rules apply to keras_kd's own quantization"):
        quantize_model(model, rules=[object()])
    with pytest.raises(ValueError, match=r"per_channel=False applies to keras_kd's own quantization"):
        quantize_model(model, per_channel=False)
    with pytest.warns(UserWarning, match="my_norm"):
        qat = quantize_model(model, unsupported="float")
    assert ("my_norm", "LayerNormalization") in float_layers(qat)
    assert qat(np.ones((1, 6), np.float32)).shape == (1, 2)


def test_missing_tfmot_names_the_qat_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_model_optimization", None)
    with pytest.raises(ImportError, match=r"pip install keras-kd\[qat\]"):
        quantize_model(_cnn())


@pytest.mark.slow
def test_tfmot_model_trains_and_converts_to_int8(rng):
    qat = quantize_model(_cnn())
    qat.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = rng.random((32, 8, 8, 1)).astype(np.float32)
    qat.fit(x, rng.integers(0, 10, 32), epochs=1, verbose=0)
    converter = tf.lite.TFLiteConverter.from_keras_model(qat)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        content = converter.convert()
    from keras_kd.interpreter import load_interpreter

    interpreter = load_interpreter(content, use_xnnpack=False)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    assert {"CONV_2D", "FULLY_CONNECTED"} <= {op["op_name"] for op in ops}
    for op in ops:
        dtypes = {np.dtype(tensors[i]["dtype"]).name for i in list(op["inputs"]) + list(op["outputs"]) if i >= 0}
        assert "float32" not in dtypes, op["op_name"]
