"""Conformance over the quantization registry: every rule and every activation converts to all-int8.

Each default rule (and each row of the activation table) has a small model here. It is made
quantization-aware, calibrated, converted by `to_tflite`, and checked to have no float op, int8
edges, and outputs within a few quantization steps of its Keras QAT model. A new rule without a
sample model fails `test_every_rule_has_a_sample`.
"""

import numpy as np
import pytest

from keras_kd.backend import LEGACY_KERAS, keras

if LEGACY_KERAS:  # keras_kd's own quantization is Keras 3 only; tf_keras delegates to tfmot
    pytest.skip("Keras 3 quantization path", allow_module_level=True)

from keras_kd.quantization import ACTIVATIONS, QuantizeRule, float_layers, quantize_model  # noqa: E402
from keras_kd.quantization.registry import default_rules  # noqa: E402
from tests.helpers import calibrated_int8_file  # noqa: E402

L = keras.layers
ops = keras.ops


def _image(shape=(8, 8, 3)):
    return keras.Input(shape, name="image")


def _sequence(shape=(12, 4)):
    return keras.Input(shape, name="sequence")


def _after_conv(layer, shape=(8, 8, 3)):
    def build():
        inputs = _image(shape)
        return keras.Model(inputs, layer()(L.Conv2D(4, 3, padding="same")(inputs)))

    return build


def _after_conv1d(layer):
    def build():
        inputs = _sequence()
        return keras.Model(inputs, layer()(L.Conv1D(4, 3, padding="same")(inputs)))

    return build


def _binary(layer):
    def build():
        inputs = _image()
        a = L.Conv2D(4, 3, padding="same")(inputs)
        b = L.Conv2D(4, 1)(inputs)
        return keras.Model(inputs, layer()([a, b]))

    return build


def _unary_op(function, shape=(8, 8, 3)):
    def build():
        inputs = _image(shape)
        return keras.Model(inputs, function(L.Conv2D(4, 3, padding="same")(inputs)))

    return build


def _attention_op():
    inputs = _sequence((6, 8))
    query = L.Reshape((6, 2, 4))(L.Dense(8)(inputs))
    key = L.Reshape((6, 2, 4))(L.Dense(8)(inputs))
    value = L.Reshape((6, 2, 4))(L.Dense(8)(inputs))
    return keras.Model(inputs, L.Flatten()(ops.dot_product_attention(query, key, value)))


def _embedding():
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    return keras.Model(tokens, L.GlobalAveragePooling1D()(L.Embedding(20, 8)(tokens)))


def _multi_head_attention():
    inputs = _sequence((6, 8))
    return keras.Model(inputs, L.MultiHeadAttention(2, 4)(inputs, inputs))


def _normalization():
    inputs = _sequence((6,))
    norm = L.Normalization(mean=[1.0, 2.0, 0.0, -1.0, 0.5, 3.0], variance=[1.0, 4.0, 0.5, 2.0, 1.0, 9.0])
    return keras.Model(inputs, L.Dense(4)(norm(inputs)))


def _standalone_batch_norm():
    inputs = _sequence((6,))
    bn = L.BatchNormalization()
    outputs = L.Dense(3)(bn(inputs))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(1)
    bn.set_weights([rng.uniform(0.5, 2, 6), rng.normal(size=6), rng.normal(size=6), rng.uniform(0.5, 2, 6)])
    return model


_LAYER_SAMPLES = {
    "Conv1D": lambda: keras.Model(i := _sequence(), L.Conv1D(4, 3, padding="causal", activation="relu")(i)),
    "Conv2D": lambda: keras.Model(i := _image(), L.Conv2D(4, 3, strides=2, activation="relu6")(i)),
    "DepthwiseConv1D": lambda: keras.Model(i := _sequence(), L.DepthwiseConv1D(3, depth_multiplier=2)(i)),
    "DepthwiseConv2D": lambda: keras.Model(i := _image(), L.DepthwiseConv2D(3, padding="same")(i)),
    "Conv1DTranspose": lambda: keras.Model(i := _sequence(), L.Conv1DTranspose(4, 3, strides=2, padding="same")(i)),
    "Conv2DTranspose": lambda: keras.Model(i := _image(), L.Conv2DTranspose(4, 3, strides=2, padding="same")(i)),
    "Dense": lambda: keras.Model(i := _sequence((6,)), L.Dense(4, activation="gelu")(i)),
    "EinsumDense": lambda: keras.Model(
        i := _sequence((5, 6)), L.EinsumDense("abc,cd->abd", output_shape=(None, 4), bias_axes="d")(i)
    ),
    "Embedding": _embedding,
    "Add": _binary(L.Add),
    "Subtract": _binary(L.Subtract),
    "Multiply": _binary(L.Multiply),
    "Concatenate": _binary(L.Concatenate),
    "GlobalAveragePooling1D": _after_conv1d(L.GlobalAveragePooling1D),
    "GlobalAveragePooling2D": _after_conv(lambda: L.GlobalAveragePooling2D(keepdims=True)),
    "Softmax": lambda: keras.Model(i := _sequence((6,)), L.Softmax()(L.Dense(5)(i))),
    "Activation": _after_conv(lambda: L.Activation("hard_silu")),
    "ReLU": _after_conv(lambda: L.ReLU(6.0)),
    "LeakyReLU": _after_conv(lambda: L.LeakyReLU(0.1)),
    "Rescaling": lambda: keras.Model(i := _image(), L.Conv2D(4, 3)(L.Rescaling(1 / 127.5, offset=-1.0)(i))),
    "Normalization": _normalization,
    "BatchNormalization": _standalone_batch_norm,
    "InputLayer": lambda: keras.Model(i := _sequence((6,)), L.Dense(3)(i)),
    "MaxPooling1D": _after_conv1d(L.MaxPooling1D),
    "MaxPooling2D": _after_conv(L.MaxPooling2D),
    "AveragePooling1D": _after_conv1d(lambda: L.AveragePooling1D(2)),
    "AveragePooling2D": _after_conv(lambda: L.AveragePooling2D(2)),
    "GlobalMaxPooling1D": _after_conv1d(L.GlobalMaxPooling1D),
    "GlobalMaxPooling2D": _after_conv(L.GlobalMaxPooling2D),
    "ZeroPadding1D": _after_conv1d(L.ZeroPadding1D),
    "ZeroPadding2D": _after_conv(L.ZeroPadding2D),
    "Cropping1D": _after_conv1d(lambda: L.Cropping1D(1)),
    "Cropping2D": _after_conv(lambda: L.Cropping2D(1)),
    "UpSampling1D": _after_conv1d(L.UpSampling1D),
    "UpSampling2D": _after_conv(lambda: L.UpSampling2D(interpolation="bilinear")),
    "Resizing": _after_conv(lambda: L.Resizing(12, 12)),
    "Reshape": _after_conv(lambda: L.Reshape((16, 16))),
    "Flatten": _after_conv(L.Flatten),
    "Permute": _after_conv(lambda: L.Permute((2, 1, 3))),
    "Dropout": _after_conv(lambda: L.Dropout(0.2)),
    "SpatialDropout1D": _after_conv1d(lambda: L.SpatialDropout1D(0.2)),
    "SpatialDropout2D": _after_conv(lambda: L.SpatialDropout2D(0.2)),
    "Identity": _after_conv(L.Identity),
    "GaussianNoise": _after_conv(lambda: L.GaussianNoise(0.1)),
    "GaussianDropout": _after_conv(lambda: L.GaussianDropout(0.1)),
    "AlphaDropout": _after_conv(lambda: L.AlphaDropout(0.1)),
    "PReLU": _after_conv(lambda: L.PReLU(shared_axes=[1, 2])),
    "SeparableConv1D": lambda: keras.Model(i := _sequence(), L.SeparableConv1D(6, 3, activation="relu")(i)),
    "SeparableConv2D": lambda: keras.Model(i := _image(), L.SeparableConv2D(6, 3, depth_multiplier=2)(i)),
    # followed by a Dense on 3-D input: a fresh LayerNormalization's gamma of ones and beta of zeros must
    # not leave two quantizers in a row before the Dense's reshape (the converter then refused the file)
    "LayerNormalization": lambda: keras.Model(
        i := _sequence((6, 8)), L.Dense(4)(L.LayerNormalization()(L.Dense(8)(i)))
    ),
    "MultiHeadAttention": _multi_head_attention,
}

# keras.ops operations, by the name of their class.
_OP_SAMPLES = {
    "Add": _unary_op(lambda x: x + 3.0),
    "Subtract": _unary_op(lambda x: ops.subtract(x, L.Conv2D(4, 1)(x))),
    "Multiply": _unary_op(lambda x: x * (1.0 / 6.0)),
    "Concatenate": _unary_op(lambda x: ops.concatenate([x, L.Conv2D(2, 1)(x)], axis=-1)),
    "Mean": _unary_op(lambda x: ops.mean(x, axis=(1, 2))),
    "Einsum": lambda: keras.Model(i := _sequence((6, 8)), ops.einsum("btc,bsc->bts", L.Dense(8)(i), L.Dense(8)(i))),
    "Matmul": lambda: keras.Model(
        i := _sequence((6, 8)), ops.matmul(L.Dense(8)(i), ops.transpose(L.Dense(8)(i), (0, 2, 1)))
    ),
    "Rsqrt": _unary_op(lambda x: ops.rsqrt(ops.add(ops.multiply(x, x), 1.0))),
    "Reshape": _unary_op(lambda x: ops.reshape(x, (-1, 64, 4))),
    "Transpose": _unary_op(lambda x: ops.transpose(x, (0, 2, 1, 3))),
    "ExpandDims": _unary_op(lambda x: ops.expand_dims(ops.mean(x, axis=1), 1)),
    "Squeeze": _unary_op(lambda x: ops.squeeze(ops.mean(x, axis=1, keepdims=True), 1)),
    "Max": _unary_op(lambda x: ops.max(x, axis=(1, 2))),
    "Relu": _unary_op(ops.relu),
    "Relu6": _unary_op(ops.relu6),
    "Sigmoid": _unary_op(ops.sigmoid),
    "HardSigmoid": _unary_op(ops.hard_sigmoid),
    "HardSilu": _unary_op(ops.hard_silu),
    "Silu": _unary_op(ops.silu),
    "Gelu": _unary_op(ops.gelu),
    "Softmax": _unary_op(lambda x: ops.softmax(x, axis=-1)),
    "DotProductAttention": _attention_op,
}


def _rule_key(rule):
    kind = "layer" if issubclass(rule.layer_type, keras.layers.Layer) else "op"
    return f"{kind}:{rule.layer_type.__name__}"


def _sample(key):
    kind, name = key.split(":")
    return (_LAYER_SAMPLES if kind == "layer" else _OP_SAMPLES)[name]


_RULE_KEYS = sorted({_rule_key(rule) for rule in default_rules()})


def test_every_rule_has_a_sample():
    missing = [key for key in _RULE_KEYS if key.split(":")[1] not in (_LAYER_SAMPLES if key.startswith("layer") else _OP_SAMPLES)]
    assert not missing, f"registry rules without a conformance sample: {missing}"


def _inputs(model, rng, count=64):
    spec = model.inputs[0]
    shape = (count, *spec.shape[1:])
    if "int" in str(spec.dtype):
        return rng.integers(0, 20, shape).astype("int32")
    return rng.normal(size=shape).astype("float32")


# Output steps of disagreement allowed: rounding, a step or two per requantization. LayerNormalization
# runs as seven int8 ops (RSQRT among them, which TFLite computes in fixed point, not as the float op
# the QAT model simulates), so a Dense after it sees more.
_STEPS = {"layer:LayerNormalization": 8}


def _check_int8(model, tmp_path, rng, max_steps=4):
    from keras_kd.export import to_tflite

    qat = quantize_model(model)
    assert float_layers(qat) == []
    x = _inputs(model, rng)
    for _ in range(4):
        qat(x, training=True)
    report = to_tflite(qat, str(tmp_path / "sample.tflite"), validation_data=x, min_agreement=0.0)
    assert report.float_ops == [], report.op_counts
    assert report.inputs[0].dtype in ("int8", "int32"), report.inputs
    assert report.outputs[0].dtype == "int8", report.outputs
    # The file computes what the QAT model computes, to within a few of its output steps.
    steps = report.validation.max_abs_diff / report.outputs[0].scale
    assert steps <= max_steps, (report.validation.max_abs_diff, report.outputs[0].scale, report.op_counts)
    return report


@pytest.mark.slow
@pytest.mark.parametrize("key", _RULE_KEYS)
def test_every_rule_converts_to_int8_and_agrees(key, tmp_path, rng):
    _check_int8(_sample(key)(), tmp_path, rng, max_steps=_STEPS.get(key, 4))


@pytest.mark.slow
@pytest.mark.parametrize("activation", sorted(set(ACTIVATIONS) - {"linear"}))
def test_every_activation_converts_to_int8_and_agrees(activation, tmp_path, rng):
    _check_int8(_after_conv(lambda: L.Activation(activation))(), tmp_path, rng)


class _Doubler(keras.layers.Layer):
    """A user layer made of supported parts: traced through without a rule."""

    def call(self, inputs):
        return ops.multiply(inputs, 2.0) + 1.0


class _Opaque(keras.layers.Layer):
    """A user layer that computes with TensorFlow directly, so it cannot be traced into keras.ops."""

    def call(self, inputs):
        from keras_kd.backend import tf

        return tf.math.cumsum(inputs, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape


def test_user_layer_is_traced_through_or_gets_a_rule(rng):
    inputs = _sequence((6,))
    model = keras.Model(inputs, L.Dense(3)(_Doubler(name="doubler")(L.Dense(4)(inputs))))
    qat = quantize_model(model)
    assert float_layers(qat) == []
    traced = qat.get_layer("doubler")
    assert isinstance(traced, keras.Model)  # the block, as a nested Functional model of keras.ops
    x = rng.normal(size=(8, 6)).astype("float32")
    for _ in range(3):
        qat(x, training=True)
    # measured 0.062, 1.6 steps of 10/255 over a [-5, 5] range: 0.1 (2.5 steps) is the tightest that holds
    np.testing.assert_allclose(qat(x).numpy(), model(x).numpy(), atol=0.1)

    opaque = keras.Model(inputs, L.Dense(3)(_Opaque(name="cumsum")(inputs)))
    with pytest.raises(ValueError, match="cumsum"):
        quantize_model(opaque)
    qat = quantize_model(opaque, rules=[QuantizeRule(_Opaque, "output")])
    assert float_layers(qat) == []
    assert type(qat.get_layer("cumsum")).__name__ == "QuantizedOutput"
    # a pass-through rule leaves the layer as it is; float_layers needs the same rules to know it is int8
    rules = [QuantizeRule(_Opaque, "passthrough")]
    qat = quantize_model(opaque, rules=rules)
    assert float_layers(qat, rules=rules) == []
    assert float_layers(qat) == [("cumsum", "_Opaque")]


def test_rules_are_validated():
    with pytest.raises(ValueError, match="role must be one of"):
        QuantizeRule(_Doubler, "fused")
    with pytest.raises(TypeError, match="must be a class"):
        QuantizeRule("Doubler", "output")
    with pytest.raises(TypeError, match="rules must be QuantizeRule objects"):
        quantize_model(keras.Sequential([keras.Input((3,)), L.Dense(2)]), rules=[(_Doubler, "output")])


# ---------------------------------------------------------------- the networks people ship (slow)


def _separable_net():
    inputs = _image((16, 16, 3))
    x = L.SeparableConv2D(8, 3, padding="same", activation="relu")(inputs)
    x = L.SeparableConv2D(8, 3, strides=2, use_bias=False)(x)
    x = L.ReLU()(L.BatchNormalization()(x))
    return keras.Model(inputs, L.Dense(10)(L.GlobalAveragePooling2D()(x)))


def _keyword_spotting_net():
    inputs = keras.Input((49, 10), name="mfcc")
    x = L.ReLU()(L.BatchNormalization()(L.Conv1D(16, 3, use_bias=False)(inputs)))
    x = L.MaxPooling1D()(x)
    x = L.Conv1D(16, 3, activation="relu", padding="causal")(x)
    return keras.Model(inputs, L.Dense(12)(L.GlobalAveragePooling1D()(L.AveragePooling1D(2)(x))))


def _text_transformer():
    tokens = keras.Input((16,), dtype="int32", name="tokens")
    x = L.Embedding(20, 32)(tokens)
    x = L.LayerNormalization()(L.Add()([x, L.MultiHeadAttention(2, 16)(x, x)]))
    f = L.Dense(32)(L.Dense(64, activation="gelu")(x))
    x = L.LayerNormalization()(L.Add()([x, f]))
    return keras.Model(tokens, L.Dense(4)(L.GlobalAveragePooling1D()(x)))


_NETWORKS = {
    "MobileNetV2": lambda: keras.applications.MobileNetV2((32, 32, 3), alpha=0.35, weights=None, classes=10, classifier_activation=None),
    "MobileNetV3Small": lambda: keras.applications.MobileNetV3Small(
        (32, 32, 3), weights=None, classes=10, include_preprocessing=True, classifier_activation=None
    ),
    "EfficientNetB0": lambda: keras.applications.EfficientNetB0(
        input_shape=(32, 32, 3), weights=None, classes=10, classifier_activation=None
    ),
    "SeparableConv2D net": _separable_net,
    "Conv1D keyword spotting": _keyword_spotting_net,
    "text transformer": _text_transformer,
}


@pytest.mark.filterwarnings("ignore:The Keras model predicts class")  # random weights: the steps are checked
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(_NETWORKS))
def test_networks_people_ship_convert_to_all_int8(name, tmp_path, rng):
    from keras_kd.export import to_tflite

    model = _NETWORKS[name]()
    qat = quantize_model(model)
    assert float_layers(qat) == []
    x = _inputs(model, rng, count=32)
    if "int" not in str(model.inputs[0].dtype):
        x = np.abs(x) * 60.0  # pixel-like values for the models with preprocessing inside
    for _ in range(3):
        qat(x, training=True)
    report = to_tflite(qat, str(tmp_path / "net.tflite"), validation_data=x, min_agreement=0.0)
    assert report.float_ops == [], report.op_counts
    assert report.inputs[0].dtype in ("int8", "int32") and report.outputs[0].dtype == "int8"
    # Random weights: 50 blocks of rounding add up to a few steps of the (tiny) logit range.
    assert report.validation.max_abs_diff / report.outputs[0].scale <= 8, report.validation


@pytest.mark.slow
def test_compare_layers_finds_the_layer_that_drifts(tmp_path, rng):
    from keras_kd.quantization import compare_layers

    inputs = _image((16, 16, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inputs)
    x = L.Activation("hard_silu", name="hs")(L.Conv2D(8, 3, padding="same", name="c2")(x))
    model = keras.Model(inputs, L.Dense(5, name="logits")(L.GlobalAveragePooling2D(name="gap")(x)))
    data = rng.normal(size=(32, 16, 16, 3)).astype("float32")
    path = str(tmp_path / "model.tflite")
    qat = calibrated_int8_file(model, data, path)
    rows = {row.name: row for row in compare_layers(qat, path, data)}
    assert list(rows) == ["c1", "c2", "hs", "gap", "logits"]
    assert all(row.max_steps <= 3.01 for row in rows.values()), rows  # rounding only
    # A Keras model that no longer matches its file from c2 on: the drift starts exactly there.
    kernel = qat.get_layer("c2").layer.kernel
    kernel.assign(kernel.numpy() * 1.5)
    rows = {row.name: row for row in compare_layers(qat, path, data)}
    assert rows["c1"].max_steps <= 1.01 and rows["c2"].max_steps > 10 and rows["c2"].relative > 0.1
    # hard-swish, the pooling and the logits carry c2's drift but, run on the file's inputs, compute what it does
    assert rows["c2"].local_max_steps > 10
    assert all(rows[name].local_max_steps <= 1.01 for name in ("c1", "hs", "gap", "logits")), rows
    with pytest.raises(ValueError, match="no quantized layers"):
        compare_layers(model, path, data)


def _hub_backbones():
    keras_hub = pytest.importorskip("keras_hub")
    mobilenet = keras_hub.models.MobileNetBackbone(
        stackwise_expansion=[[16], [4, 3], [3, 3]], stackwise_num_blocks=[1, 2, 2],
        stackwise_num_filters=[[16], [24, 24], [40, 40]], stackwise_kernel_size=[[3], [3, 3], [5, 5]],
        stackwise_num_strides=[[2], [2, 1], [2, 1]], stackwise_se_ratio=[[0.25], [None, None], [0.25, 0.25]],
        stackwise_activation=[["relu"], ["relu", "relu"], ["hard_swish", "hard_swish"]],
        stackwise_padding=[[1], [1, 1], [2, 2]], output_num_filters=64, depthwise_filters=8, depthwise_stride=2,
        depthwise_residual=False, last_layer_filter=64, squeeze_and_excite=0.5, image_shape=(32, 32, 3),
    )
    efficientnet = keras_hub.models.EfficientNetBackbone(
        stackwise_width_coefficients=[1.0] * 2, stackwise_depth_coefficients=[1.0] * 2,
        stackwise_kernel_sizes=[3, 3], stackwise_num_repeats=[1, 2], stackwise_input_filters=[16, 16],
        stackwise_output_filters=[16, 24], stackwise_expansion_ratios=[1, 4],
        stackwise_squeeze_and_excite_ratios=[0.25, 0.25], stackwise_strides=[1, 2], stackwise_block_types=["v1"] * 2,
        stackwise_force_input_filters=[0, 0], stackwise_nores_option=[False, False], input_shape=(32, 32, 3),
        num_features=64,
    )
    return {"MobileNetBackbone": mobilenet, "EfficientNetBackbone": efficientnet}


@pytest.mark.filterwarnings("ignore:The Keras model predicts class")  # random weights: the steps are checked
@pytest.mark.slow
@pytest.mark.parametrize("name", ["MobileNetBackbone", "EfficientNetBackbone"])
def test_keras_hub_backbones_convert_to_all_int8(name, tmp_path, rng):
    """keras-hub's block layers are subclassed: they are traced through, none stays float."""
    from keras_kd.export import to_tflite

    backbone = _hub_backbones()[name]
    inputs = _image((32, 32, 3))
    model = keras.Model(inputs, L.Dense(10)(L.GlobalAveragePooling2D()(backbone(inputs))))
    qat = quantize_model(model)
    assert float_layers(qat) == []
    x = rng.normal(size=(16, 32, 32, 3)).astype("float32")
    for _ in range(3):
        qat(x, training=True)
    report = to_tflite(qat, str(tmp_path / "hub.tflite"), validation_data=x, min_agreement=0.0)
    assert report.float_ops == [] and report.outputs[0].dtype == "int8"
    assert report.validation.max_abs_diff / report.outputs[0].scale <= 4, report.validation


def test_error_names_a_keras_ops_node_by_the_layer_it_follows():
    inputs = _sequence((6,))
    x = keras.ops.cumsum(L.Dense(4, name="projection")(inputs), axis=-1)
    with pytest.raises(ValueError, match=r"1 x Cumsum \(keras.ops node 'cumsum\w*' after 'projection'\)"):
        quantize_model(keras.Model(inputs, L.Dense(2)(x)))


def test_export_refuses_mixed_precision_and_warns_on_uncalibrated_ranges(tmp_path):
    from keras_kd.export import to_tflite

    model = keras.Sequential([keras.Input((6,)), L.Dense(4, activation="relu"), L.Dense(2)])
    with pytest.warns(UserWarning, match="never saw data"):
        to_tflite(quantize_model(model), str(tmp_path / "fresh.tflite"))
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = quantize_model(keras.Sequential([keras.Input((6,)), L.Dense(4), L.Dense(2)]))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    with pytest.raises(ValueError, match="compute in reduced precision"):
        to_tflite(mixed, str(tmp_path / "mixed.tflite"))
    assert not (tmp_path / "mixed.tflite").exists()


@pytest.mark.slow
def test_trained_transformer_stays_all_int8(tmp_path, rng):
    """Dense on 3-D inputs and the attention projections convert to int8 after training, not only calibrated."""
    from keras_kd.export import to_tflite

    x = rng.integers(0, 20, (128, 16)).astype("int32")
    y = (x[:, 0] % 4).astype("int32")
    qat = quantize_model(_NETWORKS["text transformer"]())
    qat.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(x, y, epochs=1, batch_size=32, verbose=0)
    report = to_tflite(qat, str(tmp_path / "trained.tflite"), validation_data=x[:64], min_agreement=0.0)
    assert report.float_ops == [] and report.outputs[0].dtype == "int8"


def test_the_rewrite_cache_keeps_the_models_it_is_keyed_by():
    """Keyed by id(): a traced block's temporary model, once freed, could hand its address (and with it this
    rebuild) to the next block's model. Seen as a shape error quantizing a keras-hub MobileNet after an
    EfficientNetB0 in one process."""
    import gc

    from keras_kd.quantization.registry import QuantizeRegistry
    from keras_kd.quantization.rewrites import _Canonicalizer
    from keras_kd.quantization.graph import UniqueNames

    def block(width):
        inputs = _sequence((6, width))
        return keras.Model(inputs, L.Dense(width)(inputs))

    first = block(4)
    canonicalizer = _Canonicalizer(QuantizeRegistry(), UniqueNames(first))
    rebuilt = canonicalizer.model(first)
    key = id(first)
    del first
    gc.collect()
    kept, kept_rebuild = canonicalizer.models[key]
    assert id(kept) == key and kept_rebuild is rebuilt  # the keyed model is still alive: its id cannot be reused
    second = block(8)
    assert canonicalizer.model(second).output.shape[-1] == 8


def test_a_mean_over_single_values_passes_its_input_scale_on():
    from keras.src.ops import numpy as np_ops

    from keras_kd.quantization.registry import averages_single_values

    keepdims = L.GlobalAveragePooling2D(keepdims=True)
    assert averages_single_values(keepdims, (None, 1, 1, 4))
    assert averages_single_values(np_ops.Mean(axis=(1, 2), keepdims=True), (None, 1, 1, 4))
    # a real average, or a MEAN that drops its axes (the converter keeps those), has a scale of its own
    assert not averages_single_values(keepdims, (None, 4, 4, 4))
    assert not averages_single_values(L.GlobalAveragePooling2D(), (None, 1, 1, 4))
    assert not averages_single_values(np_ops.Mean(axis=None, keepdims=True), (None, 1, 1, 4))
    # the converter drops it as the identity, so the QAT model gives it no quantizer, and the
    # convolution after it takes its bias grid from the layer before
    inputs = _image((4, 4, 3))
    x = L.Conv2D(8, 4, activation="relu", name="to_1x1")(inputs)
    x = L.Conv2D(4, 1, name="squeeze")(L.GlobalAveragePooling2D(keepdims=True, name="gap")(x))
    qat = quantize_model(keras.Model(inputs, x))
    assert type(qat.get_layer("gap")) is L.GlobalAveragePooling2D
    assert qat.get_layer("squeeze").input_quantizer is qat.get_layer("to_1x1").output_quantizer


def test_resizes_int8_cannot_compute_are_refused_and_rounding_rules_are_checked():
    from keras_kd.quantization import QuantizeRule, quantize_model

    inputs = keras.Input((6, 6, 3))
    model = keras.Model(inputs, L.Resizing(9, 9, interpolation="bicubic", name="bicubic")(inputs))
    with pytest.raises(ValueError, match=r"bicubic.*interpolation='bicubic': TFLite's resize ops are 'nearest' and "
                                         r"'bilinear' only"):
        quantize_model(model)
    model = keras.Model(inputs, L.Resizing(9, 9, antialias=True, name="smooth")(inputs))
    with pytest.raises(ValueError, match=r"antialias=True: TFLite has no antialiased resize op"):
        quantize_model(model)
    model = keras.Model(inputs, L.Resizing(9, 6, pad_to_aspect_ratio=True, name="padded")(inputs))
    with pytest.raises(ValueError, match=r"padded.*pad_to_aspect_ratio=True: the padding becomes float FILL"):
        quantize_model(model)
    with pytest.raises(ValueError, match=r"rounds_average must be False, True, 'away', 'up' or a callable"):
        QuantizeRule(L.AveragePooling2D, "passthrough", rounds_average="sideways")
