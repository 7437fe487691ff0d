"""Tests for keras_kd.quantization (Keras 3 path): numerics, folding, the model transform, TFLite conversion."""

import os
import warnings

import numpy as np
import pytest

from keras_kd.backend import keras, tf
from keras_kd import quantization
from keras_kd.quantization import (
    FakeQuant,
    QuantizedOutput,
    QuantizedWeights,
    fake_quant_activations,
    fake_quant_weights,
    float_layers,
    fold_batch_norm,
    is_quantization_aware,
    quantize_model,
)
from keras_kd.quantization.activations import LOGISTIC_OUTPUT_RANGE
from keras_kd.quantization.quantizers import fake_quant_reference, quantization_params

L = keras.layers


# ---------------------------------------------------------------- numerics


@pytest.mark.parametrize(
    "low, high, narrow, expected",
    [
        # scale = 6/255; 0 is the lowest grid point.
        (0.0, 6.0, False, (6 / 255, -128, 0.0, 6.0)),
        # scale = 4/255, zero point from min = 63.75 -> 64 (int8 -64), range nudged down.
        (-1.0, 3.0, False, (4 / 255, -64, -64 * 4 / 255, 191 * 4 / 255)),
        # weights: narrow range [1, 255], symmetric -> zero point 128 (int8 0), scale = max/127.
        (-2.0, 2.0, True, (2 / 127, 0, -2.0, 2.0)),
        # a range that excludes 0 is nudged to include it (zero point clamps to the lowest level).
        (0.5, 2.0, False, (1.5 / 255, -128, 0.0, 1.5)),
    ],
)
def test_quantization_params_match_hand_computed(low, high, narrow, expected):
    scale, zero_point, nudged_min, nudged_max = quantization_params(low, high, narrow_range=narrow)
    np.testing.assert_allclose(scale, expected[0], rtol=1e-6)
    assert int(zero_point) == expected[1]
    np.testing.assert_allclose([nudged_min, nudged_max], expected[2:], rtol=1e-5, atol=1e-6)


def test_fake_quant_reference_hand_values():
    # range (-1, 3): scale s = 4/255, nudged min = -64 s.
    s = 4 / 255
    got = fake_quant_reference([-2.0, -1.0, 0.01, 1.5, 3.5], -1.0, 3.0)
    expected = [-64 * s, -64 * s, 1 * s, 96 * s, 191 * s]  # 1.5 -> step 160 -> (160 - 64) s
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_tf_activation_fake_quant_equals_reference(rng):
    values = rng.normal(0.0, 2.0, size=(4, 50)).astype(np.float32)
    got = fake_quant_activations(tf.constant(values), -1.3, 4.2).numpy()
    np.testing.assert_allclose(got, fake_quant_reference(values, -1.3, 4.2), atol=1e-6)


def test_per_channel_weight_quantization_is_symmetric_per_output_channel(rng):
    kernel = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)
    kernel[..., 1] *= 10.0  # a channel with a much larger range must not coarsen the others
    got = fake_quant_weights(tf.constant(kernel), channel_axis=-1).numpy()
    bound = np.abs(kernel).max(axis=(0, 1, 2))
    expected = fake_quant_reference(kernel, -bound, bound, narrow_range=True, axis=-1)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    for channel in range(4):  # every value sits on its channel's grid of max|w|/127
        steps = got[..., channel] / (bound[channel] / 127)
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)


def test_per_tensor_weight_quantization(rng):
    kernel = rng.normal(size=(5, 3)).astype(np.float32)
    got = fake_quant_weights(tf.constant(kernel)).numpy()
    bound = np.abs(kernel).max()
    np.testing.assert_allclose(got, fake_quant_reference(kernel, -bound, bound, narrow_range=True), atol=1e-6)


def test_depthwise_kernel_gets_one_scale_per_input_times_multiplier_channel(rng):
    layer = QuantizedWeights(L.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False))
    layer.build((None, 5, 5, 3))
    kernel = rng.normal(size=(3, 3, 3, 2)).astype(np.float32)
    kernel[:, :, 0, 1] *= 20.0
    layer.layer.kernel.assign(kernel)
    got = layer.quantized_kernel().numpy()
    flat = kernel.reshape(3, 3, 6)
    bound = np.abs(flat).max(axis=(0, 1))
    expected = fake_quant_reference(flat, -bound, bound, narrow_range=True, axis=-1).reshape(kernel.shape)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_fake_quant_layer_tracks_moving_average_in_training_only():
    layer = FakeQuant(ema_decay=0.9)
    layer(tf.constant([[-1.0, 0.5, 3.0]]), training=True)  # first batch sets the range
    np.testing.assert_allclose([float(layer.min_value), float(layer.max_value)], [-1.0, 3.0])
    layer(tf.constant([[1.0, 5.0]]), training=True)  # batch range [0, 5] (0 always included)
    np.testing.assert_allclose([float(layer.min_value), float(layer.max_value)], [-0.9, 3.2], rtol=1e-6)
    assert int(layer.steps) == 2
    outputs = layer(tf.constant([[10.0, -10.0]]), training=False)  # inference: range frozen
    np.testing.assert_allclose([float(layer.min_value), float(layer.max_value)], [-0.9, 3.2], rtol=1e-6)
    np.testing.assert_allclose(outputs.numpy(), fake_quant_reference([[10.0, -10.0]], -0.9, 3.2), atol=1e-6)
    assert {w.name for w in layer.non_trainable_weights} == {"min_value", "max_value", "steps"}
    assert not layer.trainable_weights


def test_fake_quant_layer_validates_arguments():
    with pytest.raises(ValueError, match="ema_decay must be in"):
        FakeQuant(ema_decay=1.0)
    with pytest.raises(ValueError, match="fixed_range must be"):
        FakeQuant(fixed_range=(1.0, 2.0))
    with pytest.raises(ValueError, match="min_range must be a non-negative float"):
        FakeQuant(min_range=-1.0)
    with pytest.raises(ValueError, match="num_bits must be"):
        fake_quant_activations(tf.ones(2), 0.0, 1.0, num_bits=16)


# ---------------------------------------------------------------- folding


def _set_bn_statistics(bn, rng):
    channels = bn.gamma.shape[0]
    bn.set_weights(
        [
            rng.uniform(0.5, 2.0, channels).astype(np.float32),
            rng.normal(size=channels).astype(np.float32),
            rng.normal(size=channels).astype(np.float32),
            rng.uniform(0.2, 3.0, channels).astype(np.float32),
        ]
    )


@pytest.mark.parametrize(
    "make_layer, input_shape, depthwise",
    [
        (lambda: L.Conv2D(4, 3, padding="same"), (2, 6, 6, 3), False),
        (lambda: L.Conv2D(4, 3, use_bias=False), (2, 6, 6, 3), False),
        (lambda: L.DepthwiseConv2D(3, depth_multiplier=2, padding="same"), (2, 6, 6, 3), True),
        (lambda: L.Dense(5), (4, 7), False),
    ],
)
def test_fold_batch_norm_equals_layer_then_batch_norm(make_layer, input_shape, depthwise, rng):
    layer = make_layer()
    bn = L.BatchNormalization(epsilon=1e-3)
    x = rng.normal(size=input_shape).astype(np.float32)
    reference = bn(layer(x), training=False)
    _set_bn_statistics(bn, rng)
    reference = bn(layer(x), training=False).numpy()
    kernel, bias = fold_batch_norm(
        layer.kernel,
        layer.bias if layer.use_bias else None,
        bn.gamma,
        bn.beta,
        bn.moving_mean,
        bn.moving_variance,
        bn.epsilon,
        depthwise=depthwise,
    )
    folded = type(layer).from_config({**layer.get_config(), "use_bias": True, "name": "folded"})
    folded.build(input_shape)
    folded.set_weights([kernel.numpy(), bias.numpy()])
    np.testing.assert_allclose(folded(x).numpy(), reference, rtol=1e-5, atol=1e-5)


def test_quantized_layer_folds_like_the_float_model_before_quantization(rng):
    conv = L.Conv2D(4, 3, name="conv")
    bn = L.BatchNormalization(name="bn")
    x = rng.normal(size=(2, 6, 6, 3)).astype(np.float32)
    bn(conv(x))
    _set_bn_statistics(bn, rng)
    layer = QuantizedWeights(
        L.Conv2D.from_config(conv.get_config()), batch_norm=L.BatchNormalization.from_config(bn.get_config())
    )
    layer.build(x.shape)
    layer.layer.set_weights(conv.get_weights())
    layer.batch_norm.set_weights(bn.get_weights())
    kernel, bias = layer.folded_kernel_and_bias()
    unfolded = bn(conv(x), training=False).numpy()
    folded = tf.nn.bias_add(tf.nn.convolution(x, kernel), bias).numpy()
    np.testing.assert_allclose(folded, unfolded, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- the model transform


def _small_cnn(input_shape=(8, 8, 1), classes=10, softmax=True):
    inputs = keras.Input(input_shape, name="image")
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="relu1")(x)
    y = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(x)
    y = L.BatchNormalization(name="bn2")(y)
    y = L.Activation("relu6", name="relu2")(y)
    y = L.Conv2D(8, 1, name="pw")(y)
    s = L.Add(name="add")([x, y])
    s = L.ReLU(name="add_relu")(s)
    z = L.Conv2D(4, 3, padding="same", activation="relu", name="conv3")(s)
    c = L.Concatenate(name="concat")([s, z])
    c = L.MaxPooling2D(name="max_pool")(c)
    c = L.AveragePooling2D(2, name="avg_pool")(c)
    g = L.GlobalAveragePooling2D(name="gap")(c)
    f = L.Flatten(name="flatten")(c)
    f = L.Dropout(0.1, name="dropout")(f)
    h = L.Concatenate(name="concat2")([f, g])
    outputs = L.Dense(classes, name="logits")(h)
    if softmax:
        outputs = L.Softmax(name="probs")(outputs)
    return keras.Model(inputs, outputs, name="small_cnn")


def _train_step_calibration(model, x):
    """One forward pass in training mode: updates the activation ranges, nothing else."""
    model(x, training=True)


def test_quantize_model_returns_a_copy_with_fusion_and_fake_quant_placement(rng):
    model = _small_cnn()
    before = [w.copy() for w in model.get_weights()]
    qat = quantize_model(model)
    assert len(model.layers) == 20 and all(not isinstance(l, FakeQuant) for l in model.layers)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    layers = {layer.name: layer for layer in qat.layers}
    # Conv+BN+ReLU fused, named after the last absorbed layer.
    assert isinstance(layers["relu1"], QuantizedWeights) and type(layers["relu1"].layer) is L.Conv2D
    assert layers["relu1"].fused_layers == ["conv1", "bn1", "relu1"]
    assert layers["relu1"].batch_norm is not None and layers["relu1"].activation == "relu"
    assert type(layers["relu2"].layer) is L.DepthwiseConv2D and layers["relu2"].activation == "relu6"
    assert isinstance(layers["add_relu"], QuantizedOutput) and layers["add_relu"].activation == "relu"
    assert isinstance(layers["logits"], QuantizedWeights) and type(layers["logits"].layer) is L.Dense
    assert layers["probs"].output_quantizer.fixed_range == LOGISTIC_OUTPUT_RANGE
    for name in ("conv1", "bn1", "bn2", "dw", "add"):
        assert name not in layers
    # Input quantized once; pass-through layers get no quantizer.
    assert isinstance(layers["image_quant"], FakeQuant)
    for name in ("max_pool", "avg_pool", "flatten", "dropout"):
        assert not isinstance(layers[name], (FakeQuant, QuantizedOutput))
    # conv3 feeds only the Concatenate, which sets the scale; add_relu also feeds conv3, so keeps its own.
    assert layers["conv3"].output_quantizer is None
    assert layers["add_relu"].output_quantizer is not None
    assert layers["gap"].output_quantizer is None  # feeds only concat2
    assert is_quantization_aware(qat) and not is_quantization_aware(model)
    assert float_layers(qat) == []
    x = rng.random((4, 8, 8, 1)).astype(np.float32)
    assert qat(x).shape == (4, 10)


def test_quantized_model_tracks_the_float_model_after_calibration(rng):
    model = _small_cnn(softmax=False)
    qat = quantize_model(model)
    x = rng.random((32, 8, 8, 1)).astype(np.float32)
    _train_step_calibration(qat, x)
    float_out = model(x, training=False).numpy()
    qat_out = qat(x, training=False).numpy()
    # 8-bit simulation of an untrained 7-layer net: close, not equal. Measured 0.014 of the output range (a few
    # 1/255 steps accumulated over the layers); 0.03 is the tightest bound with room for other CPUs' kernels.
    error = np.abs(qat_out - float_out).max() / np.abs(float_out).max()
    assert 0 < error < 0.03


def test_sequential_and_nested_functional_models_are_quantized(rng):
    backbone = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            L.Conv2D(4, 3, name="bb_conv"),
            L.BatchNormalization(name="bb_bn"),
            L.ReLU(name="bb_relu"),
        ],
        name="backbone",
    )
    inputs = keras.Input((6, 6, 2), name="pixels")
    features = backbone(inputs)
    outputs = L.Dense(3, name="head")(L.Flatten(name="flat")(features))
    model = keras.Model(inputs, outputs)
    qat = quantize_model(model)
    inner = qat.get_layer("backbone")
    assert isinstance(inner, keras.Model)
    assert [type(l).__name__ for l in inner.layers] == ["InputLayer", "QuantizedWeights"]
    assert not any(isinstance(l, FakeQuant) for l in inner.layers)  # its input is quantized outside
    assert isinstance(qat.get_layer("pixels_quant"), FakeQuant)
    x = rng.random((2, 6, 6, 2)).astype(np.float32)
    _train_step_calibration(qat, x)
    # measured 0.006: the tightest bound that holds with a 2.5x margin
    np.testing.assert_allclose(qat(x).numpy(), model(x).numpy(), atol=0.015)

    sequential = keras.Sequential([keras.Input((5,)), L.Dense(4, activation="relu"), L.Dense(2)])
    qat_sequential = quantize_model(sequential)
    assert [type(l).__name__ for l in qat_sequential.layers[1:]] == ["FakeQuant", "QuantizedWeights", "QuantizedWeights"]


def _file_biases(path):
    """`{output tensor name: bias as the file stores it (int32 times its scales), float64}` of a .tflite file."""
    from keras_kd.interpreter import load_interpreter

    interpreter = load_interpreter(path, use_xnnpack=False, preserve_all_tensors=True)
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    biases = {}
    for op in interpreter._get_ops_details():
        if len(op["inputs"]) > 2 and op["inputs"][2] >= 0:
            bias = details[op["inputs"][2]]
            values = interpreter.get_tensor(bias["index"]).astype(np.float64)
            biases[details[op["outputs"][0]]["name"]] = (values * bias["quantization_parameters"]["scales"], bias)
    return biases


@pytest.mark.slow
def test_the_keras_bias_is_the_int32_bias_the_file_stores(tmp_path, rng):
    from keras_kd.export import to_tflite
    from keras_kd.quantization.compare import _matches

    model = _small_cnn(softmax=False)
    for weight in model.weights:  # biases and statistics as after training
        if weight.path.endswith(("bias", "beta", "moving_mean")):
            weight.assign(rng.normal(0.0, 0.1, weight.shape))
    qat = quantize_model(model)
    x = rng.random((32, 8, 8, 1)).astype(np.float32)
    for _ in range(3):
        _train_step_calibration(qat, x)
    path = str(tmp_path / "int8.tflite")
    to_tflite(qat, path)
    biases = _file_biases(path)
    layers = {layer.name: layer for layer in qat.layers}
    # each weight layer knows the quantizer that sets its input's scale, through pass-through layers
    assert layers["relu1"].input_quantizer is layers["image_quant"]
    assert layers["relu2"].input_quantizer is layers["relu1"].output_quantizer
    assert layers["pw"].input_quantizer is layers["relu2"].output_quantizer
    assert layers["conv3"].input_quantizer is layers["add_relu"].output_quantizer
    # through Flatten, Dropout, MaxPooling and AveragePooling into the Concatenate
    assert layers["logits"].input_quantizer is layers["concat2"].output_quantizer
    for name in ("relu2", "pw", "conv3", "logits"):
        layer = layers[name]
        kernel, bias = layer.folded_kernel_and_bias()
        on_grid = layer._bias_on_grid(kernel, bias).numpy()
        (stored, detail), = [value for tensor, value in biases.items() if _matches(tensor, name)]
        step = np.asarray(detail["quantization_parameters"]["scales"])
        integers = np.round(stored / step)
        # The Keras model adds the file's int32 bias, where the float bias is up to half a step off it. Both
        # are float32 (0.0025 of a step at 40,000 steps): a bias that close to a tie may land one int32 step
        # away from the converter's double-precision rounding, a thousandth of an output step.
        fraction = bias.numpy() / step - np.floor(bias.numpy() / step)
        clear_of_ties = np.abs(fraction - 0.5) > 0.01
        assert np.abs(on_grid / step - integers)[clear_of_ties].max() < 0.01, name
        assert np.abs(bias.numpy() / step - integers).max() > 0.05, name
    # found again when the model is loaded: the link is read from the graph, not saved
    qat.save(str(tmp_path / "qat.keras"))
    from keras_kd import load_model

    loaded = load_model(str(tmp_path / "qat.keras"))
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), qat.predict(x, verbose=0))
    assert all(
        loaded.get_layer(name).input_quantizer is not None for name in ("relu1", "relu2", "pw", "conv3", "logits")
    )


def _nested_cnn():
    """A stem, a block whose first convolution reads the block's input, a block inside it reading its own
    input through padding, and a block made only of pooling, whose output feeds the head."""
    inner_input = keras.Input((8, 8, 4))
    inner = keras.Model(inner_input, L.Conv2D(4, 3, name="inner_conv")(L.ZeroPadding2D(1)(inner_input)), name="inner")
    block_input = keras.Input((8, 8, 4))
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="block_conv")(block_input)
    x = L.Add(name="block_add")([x, inner(L.ZeroPadding2D(0, name="block_pad")(block_input))])
    block = keras.Model(block_input, x, name="block")
    pool_input = keras.Input((8, 8, 4))
    pool = keras.Model(pool_input, L.MaxPooling2D(2)(pool_input), name="pool")
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="stem")(inputs)
    x = block(x)
    x = L.Conv2D(4, 1, name="head_conv")(pool(x))
    return keras.Model(inputs, L.Dense(3, name="logits")(L.Flatten()(x)), name="nested")


@pytest.mark.slow
def test_a_nested_models_first_layers_add_their_bias_on_the_callers_grid(tmp_path, rng):
    from keras_kd import load_model
    from keras_kd.export import to_tflite
    from keras_kd.quantization.compare import _matches
    from keras_kd.quantization.layers import QuantizedSubmodel

    model = _nested_cnn()
    for weight in model.weights:
        if weight.path.endswith("bias"):
            weight.assign(rng.normal(0.0, 0.1, weight.shape))
    qat = quantize_model(model)
    x = rng.random((32, 8, 8, 1)).astype(np.float32)
    for _ in range(3):
        _train_step_calibration(qat, x)

    def found(current):
        block = current.get_layer("block")
        assert isinstance(block, QuantizedSubmodel)
        stem = current.get_layer("stem").output_quantizer
        # out of the block into the caller's graph; out of the inner block through the padding, twice
        assert block.get_layer("block_conv").input_quantizer is stem
        assert block.get_layer("inner").get_layer("inner_conv").input_quantizer is stem
        # into the pooling block from its output and out again at its input
        assert current.get_layer("head_conv").input_quantizer is block.get_layer("block_add").output_quantizer

    found(qat)
    path = str(tmp_path / "int8.tflite")
    to_tflite(qat, path)
    biases = _file_biases(path)
    block = qat.get_layer("block")
    for scope, layer in (("block", block.get_layer("block_conv")), ("block/inner", block.get_layer("inner").get_layer("inner_conv"))):
        kernel, bias = layer.folded_kernel_and_bias()
        on_grid = layer._bias_on_grid(kernel, bias).numpy()
        (stored, detail), = [v for tensor, v in biases.items() if _matches(tensor, f"{scope}/{layer.name}")]
        step = np.asarray(detail["quantization_parameters"]["scales"])
        clear_of_ties = np.abs(bias.numpy() / step - np.floor(bias.numpy() / step) - 0.5) > 0.01
        assert np.abs(on_grid / step - np.round(stored / step))[clear_of_ties].max() < 0.01, layer.name
        assert np.abs(bias.numpy() / step - np.round(stored / step)).max() > 0.05, layer.name
    # found again when the outer model is loaded or cloned: each nested model links itself when called
    qat.save(str(tmp_path / "qat.keras"))
    loaded = load_model(str(tmp_path / "qat.keras"))
    found(loaded)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), qat.predict(x, verbose=0))
    found(keras.models.clone_model(loaded))


def test_a_nested_model_called_on_two_scales_keeps_a_float_bias():
    block_input = keras.Input((4,))
    block = keras.Model(block_input, L.Dense(2, name="shared_dense")(block_input), name="block")
    inputs = keras.Input((4,), name="features")
    a = L.Dense(4, name="a")(inputs)
    b = L.Dense(4, name="b")(inputs)
    qat = quantize_model(keras.Model(inputs, L.Concatenate()([block(a), block(b)])))
    assert qat.get_layer("block").get_layer("shared_dense").input_quantizer is None


def test_each_graph_is_planned_once(monkeypatch):
    from keras_kd.quantization import quantize as quantize_module

    planned = []
    original = quantize_module._Placer.plan

    def counting(self, graph):
        planned.append(graph.model.name)
        return original(self, graph)

    monkeypatch.setattr(quantize_module._Placer, "plan", counting)
    block_input = keras.Input((6, 6, 2))
    block = keras.Model(block_input, L.Conv2D(4, 3, name="block_conv")(block_input), name="block")
    inputs = keras.Input((6, 6, 2), name="pixels")
    quantize_model(keras.Model(inputs, L.Dense(3, name="head")(L.Flatten()(block(inputs))), name="outer"))
    assert sorted(planned) == ["block", "outer"]


def test_unbuilt_sequential_and_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="is not built"):
        quantize_model(keras.Sequential([L.Dense(2)]))
    model = keras.Sequential([keras.Input((3,)), L.Dense(2)])
    with pytest.raises(ValueError, match="unsupported must be one of"):
        quantize_model(model, unsupported="skip")
    with pytest.raises(TypeError, match="expects a keras.Model"):
        quantize_model(L.Dense(2))
    with pytest.raises(ValueError, match="already quantization-aware.*call quantize_model on the float model"):
        quantize_model(quantize_model(model))


def _model_with_unsupported_layer():
    inputs = keras.Input((6,), name="features")
    x = L.Dense(4, activation="relu", name="dense_a")(inputs)
    x = L.Dense(4, activation="elu", name="elu_dense")(x)
    x = L.Lambda(lambda t: t * 2.0, name="doubler")(x)
    x = L.Lambda(lambda t: t + 1.0, name="shifter")(x)
    return keras.Model(inputs, L.Dense(2, name="out")(x))


def test_unsupported_layers_are_listed_in_the_error_one_line_per_type():
    with pytest.raises(ValueError) as info:
        quantize_model(_model_with_unsupported_layer())
    message = str(info.value)
    assert "cannot quantize 3 layer(s)" in message
    assert "1 x Dense ('elu_dense'): activation 'elu' is not in the activation table" in message
    assert "2 x Lambda ('doubler', 'shifter'): no quantization rule for this type" in message
    assert "rules=[QuantizeRule(Lambda, 'output')]" in message
    assert "unsupported='float'" in message
    assert len(message.splitlines()) == 4  # a header, one line per type, the supported types


def test_unsupported_float_keeps_layers_in_float_with_int8_edges(rng):
    model = _model_with_unsupported_layer()
    with pytest.warns(UserWarning, match="doubler"):
        qat = quantize_model(model, unsupported="float")
    assert float_layers(qat) == [("elu_dense", "Dense"), ("doubler", "Lambda"), ("shifter", "Lambda")]
    # the float layer's output is re-quantized before the next quantized layer; the input stays quantized
    assert isinstance(qat.get_layer("shifter_quant"), FakeQuant)
    assert isinstance(qat.get_layer("features_quant"), FakeQuant)
    x = rng.normal(size=(8, 6)).astype(np.float32)
    _train_step_calibration(qat, x)
    # measured 0.036 (the float layers' outputs are re-quantized): 0.05 is already the tightest that holds
    np.testing.assert_allclose(qat(x).numpy(), model(x).numpy(), atol=0.05)
    np.testing.assert_array_equal(
        qat.get_layer("elu_dense").get_weights()[0], model.get_layer("elu_dense").get_weights()[0]
    )


def test_keras_file_round_trip_keeps_ranges_and_outputs(tmp_path, rng):
    qat = quantize_model(_small_cnn())
    x = rng.random((8, 8, 8, 1)).astype(np.float32)
    _train_step_calibration(qat, x)
    path = str(tmp_path / "qat.keras")
    qat.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_array_equal(restored(x).numpy(), qat(x).numpy())
    assert int(restored.get_layer("image_quant").steps) == 1
    assert float(restored.get_layer("relu1").output_quantizer.max_value) > 0
    names = {v.path for v in restored.non_trainable_variables}
    assert any(name.endswith("output_quantizer/min_value") for name in names)
    assert is_quantization_aware(restored)


def test_layer_get_config_round_trip():
    layer = QuantizedWeights(L.Dense(3, name="d"), activation="relu6", quantize_output=False, ema_decay=0.9, name="q")
    clone = QuantizedWeights.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    fq = FakeQuant(fixed_range=(0.0, 1.0), name="fq")
    assert FakeQuant.from_config(fq.get_config()).get_config() == fq.get_config()


def _gradient_tape_step(model, optimizer, x, y):
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    gradients = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))
    return loss


def test_custom_gradient_tape_train_step_trains_folded_weights(rng):
    qat = quantize_model(_small_cnn(softmax=False))
    optimizer = keras.optimizers.Adam(1e-2)
    x = rng.random((16, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 10, 16)
    step = tf.function(lambda: _gradient_tape_step(qat, optimizer, x, y))
    gamma = qat.get_layer("relu1").batch_norm.gamma.numpy().copy()
    moving_mean = qat.get_layer("relu1").batch_norm.moving_mean.numpy().copy()
    losses = [float(step()) for _ in range(15)]
    assert losses[-1] < losses[0]
    assert not np.allclose(qat.get_layer("relu1").batch_norm.gamma.numpy(), gamma)
    np.testing.assert_array_equal(qat.get_layer("relu1").batch_norm.moving_mean.numpy(), moving_mean)
    assert int(qat.get_layer("image_quant").steps) == 15


def test_mirrored_strategy_training_step_updates_ranges(rng):
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        pytest.skip("needs the two logical CPU devices conftest configures")
    # ReductionToOneDevice: collective all-reduce keys clash between strategies built in one test process.
    strategy = tf.distribute.MirroredStrategy([d.name for d in devices[:2]],
                                      cross_device_ops=tf.distribute.ReductionToOneDevice())
    with strategy.scope():
        qat = quantize_model(_small_cnn(softmax=False))
        optimizer = keras.optimizers.SGD(0.01)
    x = rng.random((16, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 10, 16)
    dataset = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices((x, y)).batch(16))

    @tf.function
    def distributed_step(batch):
        per_replica = strategy.run(lambda bx, by: _gradient_tape_step(qat, optimizer, bx, by), args=batch)
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)

    for batch in dataset:
        loss = distributed_step(batch)
    assert np.isfinite(float(loss))
    quantizer = qat.get_layer("image_quant")
    assert int(quantizer.steps.numpy()) == 1
    assert 0.5 < float(quantizer.max_value.numpy()) <= 1.0  # the mean of the two replicas' batch maxima
    for variable in (quantizer.min_value, quantizer.max_value):
        values = [float(v.numpy()) for v in strategy.experimental_local_results(variable.value)]
        assert len(values) == 2 and values[0] == values[1]  # replicas agree


def test_mixed_precision_keeps_fake_quant_in_float32(rng):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _small_cnn(softmax=False)
        qat = quantize_model(model)
        optimizer = keras.optimizers.Adam(1e-3)
        x = rng.random((8, 8, 8, 1)).astype(np.float32)
        loss = _gradient_tape_step(qat, optimizer, x, rng.integers(0, 10, 8))
        assert np.isfinite(float(loss))
        assert qat.get_layer("relu1").compute_dtype == "float16"
        assert qat.get_layer("image_quant").min_value.dtype == "float32"
        assert qat(x).dtype == "float16"
    finally:
        keras.mixed_precision.set_global_policy("float32")


# ---------------------------------------------------------------- TFLite conversion (slow)


def _convert(model, int8_io=True):
    """The plain TFLite converter on a QAT model, as a user converting it without to_tflite would run it."""
    from keras_kd.quantization import converting

    with converting():  # leaves the average pool's rounding to AVERAGE_POOL_2D
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return converter.convert()


def _ops_and_types(content):
    from keras_kd.interpreter import load_interpreter

    interpreter = load_interpreter(content, use_xnnpack=False)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = []
    for op in interpreter._get_ops_details():
        inputs = [np.dtype(tensors[i]["dtype"]).name for i in op["inputs"] if i >= 0]
        outputs = [np.dtype(tensors[i]["dtype"]).name for i in op["outputs"]]
        ops.append((op["op_name"], inputs, outputs))
    return interpreter, ops


def _assert_int8_end_to_end(ops, float_io=False):
    """Every op computes on int8 (int32 only for biases and shapes); QUANTIZE/DEQUANTIZE only at float edges."""
    for index, (name, inputs, outputs) in enumerate(ops):
        if name == "QUANTIZE" and "float32" in inputs:
            assert float_io and index == 0, ops
            continue
        if name == "DEQUANTIZE":
            assert float_io and index == len(ops) - 1, ops
            continue
        assert "float32" not in inputs + outputs, (name, inputs, outputs)
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "CONCATENATION", "MEAN", "SOFTMAX"):
            assert inputs[0] == "int8" and outputs == ["int8"], (name, inputs, outputs)


@pytest.mark.slow
def test_small_cnn_converts_to_int8_end_to_end(rng):
    qat = quantize_model(_small_cnn())
    x = rng.random((32, 8, 8, 1)).astype(np.float32)
    qat.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    qat.fit(x, rng.integers(0, 10, 32), epochs=2, batch_size=16, verbose=0)
    interpreter, ops = _ops_and_types(_convert(qat))
    names = [name for name, _, _ in ops]
    required = ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "CONCATENATION", "MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN")
    for name in required + ("FULLY_CONNECTED", "SOFTMAX"):
        assert name in names
    # BN and ReLU are folded/fused: no standalone ops for them.
    for absent in ("MUL", "RELU", "RELU6", "DEQUANTIZE"):
        assert absent not in names
    _assert_int8_end_to_end(ops)
    output = interpreter.get_output_details()[0]
    assert output["quantization"] == (1 / 256, -128)  # TFLite's int8 softmax
    assert interpreter.get_input_details()[0]["dtype"] == np.int8

    _, float_io_ops = _ops_and_types(_convert(qat, int8_io=False))
    assert float_io_ops[0][0] == "QUANTIZE" and float_io_ops[-1][0] == "DEQUANTIZE"
    _assert_int8_end_to_end(float_io_ops, float_io=True)


def _digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[..., None]
    return x, data.target.astype(np.int32)


def _digits_cnn():
    inputs = keras.Input((8, 8, 1), name="digit")
    x = L.Conv2D(16, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="relu1")(x)
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.BatchNormalization(name="bn2")(x)
    x = L.ReLU(6.0, name="relu2")(x)
    x = L.MaxPooling2D(name="pool")(x)
    x = L.Flatten(name="flatten")(x)
    outputs = L.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="digits_cnn")


@pytest.mark.slow
def test_trained_digits_cnn_int8_interpreter_agrees_with_qat_model():
    from keras_kd.interpreter import dequantize_output, load_interpreter, quantize_input

    x, y = _digits()
    x_train, y_train, x_test, y_test = x[:1200], y[:1200], x[1200:], y[1200:]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = _digits_cnn()
    model.compile(keras.optimizers.Adam(3e-3), loss)
    model.fit(x_train, y_train, epochs=4, batch_size=64, verbose=0)
    qat = quantize_model(model)
    qat.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    qat.fit(x_train, y_train, epochs=2, batch_size=64, verbose=0)
    keras_logits = qat.predict(x_test, verbose=0)
    assert (keras_logits.argmax(1) == y_test).mean() > 0.85

    content = _convert(qat)
    _, ops = _ops_and_types(content)
    _assert_int8_end_to_end(ops)
    interpreter = load_interpreter(content)
    input_detail, output_detail = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(input_detail["index"], x_test.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(input_detail["index"], quantize_input(x_test, input_detail))
    interpreter.invoke()
    int8_logits = dequantize_output(interpreter.get_tensor(output_detail["index"]), output_detail)
    agreement = (int8_logits.argmax(1) == keras_logits.argmax(1)).mean()
    assert agreement >= 0.99, agreement
    scale = output_detail["quantization"][0]
    assert np.abs(int8_logits - keras_logits).max() <= 4 * scale
    if os.environ.get("KERAS_KD_PRINT_FIGURES"):
        difference = np.abs(int8_logits - keras_logits).max()
        print(f"digits: agreement {agreement:.4f}, max |logit diff| {difference:.4f}, output scale {scale:.4f}")


def test_public_surface_is_pinned():
    assert sorted(quantization.__all__) == sorted(
        [
            "quantize_model",
            "is_quantization_aware",
            "float_layers",
            "supported_layer_types",
            "compare_layers",
            "LayerDrift",
            "QuantizeRule",
            "QuantizeRegistry",
            "ActivationRule",
            "ACTIVATIONS",
            "FakeQuant",
            "QuantizedWeights",
            "QuantizedActivation",
            "QuantizedAffine",
            "QuantizedOutput",
            "QuantizedAveragePooling",
            "QuantizedResize",
            "QuantizedConstant",
            "QuantizedSubmodel",
            "fold_batch_norm",
            "fake_quant_weights",
            "fake_quant_activations",
            "converting",
        ]
    )
    assert {"Conv2D", "DepthwiseConv2D", "Dense", "BatchNormalization", "Add", "Concatenate"} <= set(
        quantization.supported_layer_types()
    )


def test_round_average_is_the_int8_kernels_integer_arithmetic(rng):
    from keras_kd.quantization.quantizers import quantization_params, round_average

    low, high = -0.7, 1.9
    scale, zero_point, _, _ = quantization_params(low, high)
    for count in (2, 3, 4, 9, 49):
        q = rng.integers(-128, 128, size=(2000, count))
        total = q.sum(axis=1)
        # AVERAGE_POOL_2D: (sum + n / 2) / n for a positive sum, (sum - n / 2) / n for a negative one, in C
        expected = np.sign(total) * ((np.abs(total) + count // 2) // count)
        averages = ((q - zero_point) * scale).mean(axis=1).astype(np.float32)
        got = round_average(tf.constant(averages), low, high).numpy()
        np.testing.assert_array_equal(np.round(got / scale + zero_point), expected, err_msg=f"{count} values")


def _depthwise_separable_net():
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = L.ReLU(6.0, name="stem_relu")(L.BatchNormalization(name="stem_bn")(x))
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.Conv2D(12, 1, activation="relu", name="pw")(x)
    return keras.Model(inputs, L.Dense(3, name="logits")(L.GlobalAveragePooling2D()(x)))


def _kernel_scales(path):
    """op name -> number of distinct scales of its kernel (second input) and of its bias, as the file stores them
    (the converter writes a FULLY_CONNECTED kernel's one scale once per output channel)."""
    from keras_kd.interpreter import load_interpreter

    interpreter = load_interpreter(path)
    interpreter.allocate_tensors()
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    found = {}
    for op in interpreter._get_ops_details():
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            kernel, bias = (details[op["inputs"][i]]["quantization_parameters"]["scales"] for i in (1, 2))
            found[f"{op['op_name']}:{details[op['outputs'][0]]['name']}"] = (len(set(kernel)), len(set(bias)))
    return found


@pytest.mark.filterwarnings("ignore:The Keras model predicts class")  # random weights: the steps are checked
@pytest.mark.slow
@pytest.mark.parametrize("per_channel", [True, "depthwise", False])
def test_per_channel_chooses_which_kernels_take_one_scale(tmp_path, rng, per_channel):
    from keras_kd import load_model
    from keras_kd.export import to_tflite
    from keras_kd.quantization import compare_layers

    model = _depthwise_separable_net()
    for weight in model.weights:  # channels of different sizes, as after training
        if weight.path.endswith(("bias", "beta", "moving_mean", "gamma")):
            weight.assign(rng.uniform(0.2, 2.0, weight.shape))
    qat = quantize_model(model, per_channel=per_channel)
    x = rng.normal(size=(32, 8, 8, 3)).astype(np.float32)
    for _ in range(3):
        qat(x, training=True)
    expected = {"stem_relu": per_channel is True, "dw": per_channel in (True, "depthwise"), "pw": per_channel is True,
                "logits": False}
    assert {name: qat.get_layer(name).per_channel for name in expected} == expected
    path = str(tmp_path / "int8.tflite")
    to_tflite(qat, path, validation_data=x)
    scales = _kernel_scales(path)
    channels = {"stem_relu": 8, "dw": 8, "pw": 12, "logits": 1}
    for name, per in expected.items():
        (count,) = [value for op, value in scales.items() if f"/{name}" in op]
        assert count == ((channels[name],) * 2 if per else (1, 1)), (name, scales)
    # the bias is on the grid of the kernel's one scale: each layer computes what its op computes
    rows = compare_layers(qat, path, x)
    assert rows and all(row.local_max_steps <= 1.01 for row in rows), rows
    qat.save(str(tmp_path / "qat.keras"))
    loaded = load_model(str(tmp_path / "qat.keras"))
    assert {name: loaded.get_layer(name).per_channel for name in expected} == expected
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), qat.predict(x, verbose=0))


def test_per_channel_arguments_are_checked():
    from keras_kd.quantization import QuantizedWeights

    with pytest.raises(ValueError, match=r"per_channel must be True, 'depthwise' or False, got 'pointwise'"):
        quantize_model(_depthwise_separable_net(), per_channel="pointwise")
    with pytest.raises(ValueError, match=r"got 1"):  # not a truthy stand-in for True
        quantize_model(_depthwise_separable_net(), per_channel=1)
    with pytest.raises(ValueError, match=r"per_channel=True for Dense \('d'\).*FULLY_CONNECTED.*per_channel=None"):
        QuantizedWeights(L.Dense(2, name="d"), per_channel=True)
    layer = QuantizedWeights(L.Conv2D(2, 1), per_channel=False)
    assert QuantizedWeights.from_config(layer.get_config()).per_channel is False
