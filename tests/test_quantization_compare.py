"""compare_layers on nested and multi-input models, and the interpreter's input/output order."""

import numpy as np
import pytest

from keras_kd.backend import LEGACY_KERAS, keras

if LEGACY_KERAS:  # keras_kd's own quantization is Keras 3 only
    pytest.skip("Keras 3 quantization path", allow_module_level=True)

from keras_kd import interpreter as interpreter_module  # noqa: E402
from keras_kd.quantization import FakeQuant, compare_layers, quantize_model  # noqa: E402
from tests.helpers import calibrated_int8_file  # noqa: E402

L = keras.layers


class _FakeInterpreter:
    """Details listed in file order, a signature that names them in Keras order."""

    def __init__(self, inputs, outputs):
        self.inputs, self.outputs = inputs, outputs

    def get_input_details(self):
        return [{"index": index, "name": f"tensor_{index}"} for index in sorted(self.inputs.values(), reverse=True)]

    def get_output_details(self):
        return [{"index": index, "name": f"tensor_{index}"} for index in sorted(self.outputs.values(), reverse=True)]

    def _get_full_signature_list(self):
        return {"serving_default": {"inputs": self.inputs, "outputs": self.outputs}}


def test_details_follow_the_signature_not_the_file_order():
    inputs = {f"input_{position}": 100 - position for position in range(12)}  # input_10 sorts after input_9
    fake = _FakeInterpreter(inputs, {"output_0": 7, "output_1": 3})
    assert [d["index"] for d in interpreter_module.input_details(fake)] == [100 - p for p in range(12)]
    assert [d["index"] for d in interpreter_module.output_details(fake)] == [7, 3]


def _two_in_two_out():
    block_input = keras.Input((8, 8, 4))
    block = keras.Model(
        block_input, L.Conv2D(4, 3, padding="same", activation="relu", name="conv")(block_input), name="block1"
    )
    a = keras.Input((8, 8, 3), name="a")
    b = keras.Input((8, 8, 3), name="b")
    x = block(L.Conv2D(4, 1, name="stem")(a))
    y = L.Conv2D(4, 1, name="side")(b)
    total = L.Add(name="add")([x, y])
    first = L.Dense(3, name="head0")(L.GlobalAveragePooling2D(name="gap")(total))
    second = L.Dense(2, name="head1")(L.GlobalAveragePooling2D(name="gap_b")(y))
    return keras.Model([a, b], [first, second])


@pytest.fixture
def converted(tmp_path, rng):
    from keras_kd.export import to_tflite

    qat = quantize_model(_two_in_two_out())
    # different scales on the two inputs: feeding one to the other's slot is visible
    data = [rng.normal(size=(16, 8, 8, 3)).astype("float32"), 4.0 * rng.normal(size=(16, 8, 8, 3)).astype("float32")]
    for _ in range(3):
        qat(data, training=True)
    path = str(tmp_path / "two.tflite")
    to_tflite(qat, path)
    return qat, path, data


@pytest.mark.slow
def test_two_inputs_two_outputs_map_by_signature_name(converted):
    qat, path, data = converted
    interpreter = interpreter_module.load_interpreter(path)
    inputs = interpreter_module.input_details(interpreter)
    outputs = interpreter_module.output_details(interpreter)
    assert [d["shape"][-1] for d in outputs] == [3, 2]
    expected = [np.asarray(e) for e in qat.predict(data, verbose=0)]
    for sample in range(4):
        for detail, values in zip(inputs, data):
            interpreter.set_tensor(detail["index"], interpreter_module.quantize_input(values[sample : sample + 1], detail))
        interpreter.invoke()
        for detail, keras_output in zip(outputs, expected):
            actual = interpreter_module.dequantize_output(interpreter.get_tensor(detail["index"]), detail)
            assert np.abs(actual - keras_output[sample : sample + 1]).max() <= 3.01 * detail["quantization"][0]


@pytest.mark.slow
def test_compare_layers_reports_nested_layers_of_a_two_input_model(converted):
    qat, path, data = converted
    rows = {row.name: row for row in compare_layers(qat, path, data)}
    assert {"stem", "block1/conv", "side", "add", "gap", "gap_b", "head0", "head1"} <= set(rows), list(rows)
    assert "block1_1/conv" in rows["block1/conv"].tensor
    assert all(row.max_steps <= 3.01 for row in rows.values()), rows
    # each layer run on the file's own inputs: at most one step (TFLite's rounding), on every layer
    assert all(row.local_max_steps is not None and row.local_max_steps <= 1.01 for row in rows.values()), rows
    by_name = {row.name: row for row in compare_layers(qat, path, {"b": data[1], "a": data[0]})}
    assert by_name["head1"].max_steps == rows["head1"].max_steps
    # a Keras model that no longer matches inside the nested block: the drift starts there
    kernel = qat.get_layer("block1").get_layer("conv").layer.kernel
    kernel.assign(kernel.numpy() * 1.5)
    rows = {row.name: row for row in compare_layers(qat, path, data)}
    assert rows["stem"].max_steps <= 1.01 and rows["block1/conv"].max_steps > 10, rows
    # the drift carries into the layers after it; run on the file's inputs, only the changed layer is off
    assert rows["add"].max_steps > 3 and rows["block1/conv"].local_max_steps > 10, rows
    assert rows["block1/conv"].local_off > 0.3, rows  # ReLU zeros stay zero
    for name in ("stem", "add", "gap", "head0", "side", "head1"):
        assert rows[name].local_max_steps <= 1.01, (name, rows[name])
    with pytest.raises(ValueError, match="has 2 input"):
        compare_layers(qat, path, data[0])
    with pytest.raises(ValueError, match="without the model's input"):
        compare_layers(qat, path, {"a": data[0]})


class _SqueezeExcite(keras.layers.Layer):
    """A squeeze-excite block written with keras.ops, as keras-hub writes its blocks: traced by quantize_model."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.squeeze = L.Conv2D(channels // 2, 1, activation="relu", name="squeeze")
        self.excite = L.Conv2D(channels, 1, activation="sigmoid", name="excite")

    def call(self, inputs):
        scale = self.excite(self.squeeze(keras.ops.mean(inputs, axis=(1, 2), keepdims=True)))
        return inputs * scale


@pytest.mark.slow
def test_compare_layers_reports_the_keras_ops_calls_of_a_traced_block(tmp_path, rng):
    inputs = keras.Input((8, 8, 3))
    x = _SqueezeExcite(8, name="se")(L.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs))
    # on a 1x1 map the converter drops the mean, scale and all: the QAT model gives it no quantizer either
    x = _SqueezeExcite(8, name="se_flat")(L.Conv2D(8, 8, activation="relu", name="to_1x1")(x))
    data = rng.normal(size=(32, 8, 8, 3)).astype("float32")
    path = str(tmp_path / "se.tflite")
    qat = calibrated_int8_file(keras.Model(inputs, L.Dense(3, name="head")(L.Flatten()(x))), data, path)
    rows = {row.name: row for row in compare_layers(qat, path, data)}
    ops_rows = {name: row for name, row in rows.items() if row.name.rsplit("/", 1)[-1].endswith("_quant")}
    # the quantizers after ops.mean and `*`, named by the layers the user can find, matched to TensorFlow's ops
    mean_rows = [row for row in ops_rows.values() if row.tensor.endswith("/Mean")]
    mul_rows = [row for row in ops_rows.values() if row.tensor.endswith("/Mul")]
    assert [row.name.split("/")[0] for row in mean_rows] == ["se"], ops_rows
    assert sorted(row.name.split("/")[0] for row in mul_rows) == ["se", "se_flat"], ops_rows
    assert all("se_1/" in row.tensor for row in mean_rows + mul_rows if row.name.startswith("se/"))
    assert len(ops_rows) == 3, ops_rows
    assert not any(isinstance(layer, FakeQuant) and layer.name.startswith("mean")
                   for layer in qat.get_layer("se_flat").layers)
    # each within a step of the file, on the file's own inputs too
    assert all(row.max_steps <= 3.01 and row.local_max_steps <= 1.01 for row in rows.values()), rows
    # XNNPACK (the default) averages as the Keras model does; the builtin MEAN rounds up, within a step
    assert mean_rows[0].local_off <= 0.01, mean_rows
    builtin = {row.name: row for row in compare_layers(qat, path, data, use_xnnpack=False)}
    assert set(builtin) == set(rows)
    assert all(row.local_max_steps <= 1.01 for row in builtin.values()), builtin


@pytest.mark.slow
@pytest.mark.parametrize("use_xnnpack", [True, False])
def test_an_average_pool_rounds_as_the_int8_kernel_does(tmp_path, rng, use_xnnpack):
    from keras_kd.quantization import QuantizedAveragePooling

    inputs = keras.Input((12, 3))
    x = L.Conv1D(8, 3, padding="same", activation="relu", name="conv_a")(inputs)
    x = L.AveragePooling1D(2, name="pool")(x)
    x = L.Conv1D(8, 3, padding="same", name="conv_b")(x)
    data = rng.normal(size=(32, 12, 3)).astype("float32")
    path = str(tmp_path / "pool.tflite")
    qat = calibrated_int8_file(keras.Model(inputs, L.Dense(3, name="head")(L.Flatten()(x))), data, path)
    pool = qat.get_layer("pool")
    assert isinstance(pool, QuantizedAveragePooling)
    assert pool.input_quantizer is qat.get_layer("conv_a").output_quantizer
    # half the averages of two int8 values fall between two steps: the rounding decides them
    before = keras.Model(qat.input, pool.input)(data)
    averaged = pool.layer(before).numpy()
    rounded = pool(before).numpy()
    assert np.mean(np.abs(rounded - averaged) > 1e-6) > 0.1
    # the pool's row: on the file's own inputs, every average is the one the file's AVERAGE_POOL_2D wrote
    # (unrounded, a fifth are half a step off), on both kernel sets
    rows = {row.name: row for row in compare_layers(qat, path, data, use_xnnpack=use_xnnpack)}
    assert rows["pool"].local_off == 0.0 and rows["pool"].local_max_steps < 0.01, rows["pool"]
    if use_xnnpack:  # and on XNNPACK the whole model computes what the file computes
        assert all(row.max_steps < 0.01 for row in rows.values()), rows


@pytest.mark.slow
def test_a_constant_operand_is_quantized_as_the_converter_stores_it(tmp_path, rng):
    from keras_kd import load_model
    from keras_kd.quantization import QuantizedConstant

    table = rng.normal(0.0, 0.05, size=(1, 6, 4)).astype("float32")  # a position table, computed once
    scale = rng.uniform(0.5, 1.5, size=(4,)).astype("float32")
    inputs = keras.Input((6, 3))
    x = L.Dense(4, name="proj")(inputs)
    x = L.Add(name="add_table")([x, table])
    x = keras.ops.multiply(x, scale)
    data = rng.normal(size=(32, 6, 3)).astype("float32")
    path = str(tmp_path / "constant.tflite")
    qat = calibrated_int8_file(keras.Model(inputs, L.Dense(3, name="head")(L.Flatten()(x))), data, path)
    constants = [layer for layer in qat.layers if isinstance(layer, QuantizedConstant)]
    assert len(constants) == 2, [layer.name for layer in qat.layers]
    np.testing.assert_array_equal(constants[0].value.numpy(), table)
    # the file's ADD computes what the Keras model computes; its MUL (XNNPACK requantizes it in float32)
    # may round a value within float32's reach of a tie the other way
    rows = {row.name: row for row in compare_layers(qat, path, data)}
    assert rows["add_table"].local_off == 0.0 and rows["add_table"].local_max_steps < 0.01, rows["add_table"]
    assert all(row.max_steps <= 1.01 and row.local_off < 0.01 for row in rows.values()), rows
    qat.save(str(tmp_path / "qat.keras"))
    np.testing.assert_array_equal(load_model(str(tmp_path / "qat.keras")).predict(data, verbose=0),
                                  qat.predict(data, verbose=0))


@pytest.mark.slow
def test_a_file_converted_without_converting_is_flagged_and_bad_inputs_are_explained(tmp_path, rng):
    import warnings

    from keras_kd.backend import tf

    inputs = keras.Input((12, 3), name="frames")
    x = L.AveragePooling1D(2, name="pool")(L.Conv1D(8, 3, padding="same", activation="relu", name="conv")(inputs))
    data = rng.normal(size=(16, 12, 3)).astype("float32")
    qat = calibrated_int8_file(keras.Model(inputs, L.Dense(3)(L.Flatten()(x))), data, str(tmp_path / "ok.tflite"))
    # the plain converter traces the pool's rounding into the file: its values match, its ops are float
    converter = tf.lite.TFLiteConverter.from_keras_model(qat)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    plain = converter.convert()
    with pytest.warns(UserWarning, match=r"in float \(.*FLOOR.*\): it is not all-int8.*converting\(\)"):
        compare_layers(qat, plain, data)
    with warnings.catch_warnings(record=True) as caught:  # the file to_tflite wrote is all-int8: no warning
        warnings.simplefilter("always")
        compare_layers(qat, str(tmp_path / "ok.tflite"), data)
    assert not [w for w in caught if "not all-int8" in str(w.message)]
    with pytest.raises(ValueError, match=r"samples of shape \(3,\) .* for 'frames' takes samples of shape \(12, 3\)"):
        compare_layers(qat, str(tmp_path / "ok.tflite"), data[:, 0])
    with pytest.raises(ValueError, match=r"one sample without its batch axis: pass x\[None\]"):
        compare_layers(qat, str(tmp_path / "ok.tflite"), data[0])


@pytest.mark.slow
def test_names_cut_by_compact_find_the_same_tensors_as_the_converters_names(tmp_path, rng):
    import dataclasses

    from keras_kd.export import to_tflite

    block_input = keras.Input((8, 8, 8))
    block = keras.Model(block_input, _SqueezeExcite(8, name="se")(block_input), name="block")
    inputs = keras.Input((8, 8, 3))
    x = L.BatchNormalization(name="bn")(L.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs))
    x = block(L.ReLU(6.0, name="relu")(x))
    data = rng.normal(size=(32, 8, 8, 3)).astype("float32")
    qat = calibrated_int8_file(keras.Model(inputs, L.Dense(3, name="head")(L.Flatten()(x))), data,
                               str(tmp_path / "cut.tflite"))
    full = to_tflite(qat, str(tmp_path / "full.tflite"), compact=False)
    cut = {row.name: row for row in compare_layers(qat, str(tmp_path / "cut.tflite"), data)}
    converters = {row.name: row for row in compare_layers(qat, full.path, data)}
    # the traced block's ops (found by TensorFlow's op names), the nested layers and the fused stem, all found
    assert {"relu", "block/se/squeeze", "block/se/excite", "head"} <= set(cut), list(cut)
    assert any(name.startswith("block/se/mean") for name in cut), list(cut)
    assert list(cut) == list(converters)
    # the row of a fused convolution is named after its last layer and lists the layers it computes
    assert cut["relu"].fused_layers == ("stem", "bn", "relu") and cut["head"].fused_layers == ()
    for name, row in cut.items():
        assert dataclasses.replace(row, tensor="") == dataclasses.replace(converters[name], tensor=""), name
        assert set(row.tensor.split(";")) <= set(converters[name].tensor.split(";")), name
    assert sum(len(r.tensor) for r in cut.values()) < 0.8 * sum(len(r.tensor) for r in converters.values())
    # names dropped: nothing can be matched, and the error says why instead of returning no rows
    stripped = to_tflite(qat, str(tmp_path / "stripped.tflite"), strip_names=True)
    with pytest.raises(ValueError, match=r"\d+ of the file's \d+ op outputs have no name \(written with "
                                         r"to_tflite\(..., strip_names=True\)\).*without strip_names"):
        compare_layers(qat, stripped.path, data)
    # a file converted from another model: no layer of this one is found
    other = calibrated_int8_file(keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(2, 1, name="elsewhere"),
                                                   L.Flatten(name="flat"), L.Dense(3, name="out")]),
                                 data, str(tmp_path / "other.tflite"))
    assert other is not None
    with pytest.raises(ValueError, match=r"None of the \d+ quantized layers of .* has a tensor in the file"):
        compare_layers(qat, str(tmp_path / "other.tflite"), data)


@pytest.mark.slow
def test_a_bilinear_resize_rounds_as_xnnpack_does(tmp_path, rng):
    from keras_kd.quantization import QuantizedResize

    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv_a")(inputs)
    x = L.UpSampling2D(2, interpolation="bilinear", name="up")(x)
    x = L.UpSampling2D(2, name="nearest")(x)  # copies values: nothing to round
    x = L.Conv2D(4, 3, padding="same", name="conv_b")(x)
    data = rng.normal(size=(32, 6, 6, 3)).astype("float32")
    path = str(tmp_path / "resize.tflite")
    qat = calibrated_int8_file(keras.Model(inputs, L.Dense(3, name="head")(L.Flatten()(x))), data, path)
    assert isinstance(qat.get_layer("up"), QuantizedResize) and qat.get_layer("up").ties == "up"
    assert type(qat.get_layer("nearest")) is L.UpSampling2D
    # a quarter of a 2x upsampling's weighted averages fall halfway between two steps (measured: unrounded,
    # the next convolution was 2 steps off on a quarter of its values): XNNPACK rounds them up
    rows = {row.name: row for row in compare_layers(qat, path, data)}
    assert rows["up"].local_off == 0.0 and rows["up"].local_max_steps < 0.01, rows["up"]
    # and the convolution after it computes what the file computes (a value within float32's reach of a tie
    # may round the other way)
    assert rows["conv_b"].local_off < 0.001 and all(row.max_steps <= 1.01 for row in rows.values()), rows
    # the builtin kernels round those halves away from zero: within a step
    builtin = {row.name: row for row in compare_layers(qat, path, data, use_xnnpack=False)}
    assert 0.01 < builtin["up"].local_off < 0.3 and builtin["up"].local_max_steps <= 1.01, builtin["up"]
