"""Tests for keras_kd.export._compact: arrays stored once, names dropped, the file computing bit for bit the same."""

import numpy as np
import pytest

from keras_kd import export
from keras_kd.backend import keras
from keras_kd.export import _compact

schema = pytest.importorskip("tensorflow.lite.python.schema_py_generated")
litert = pytest.importorskip("ai_edge_litert.interpreter")


def _mobile_block():
    """Per-channel convolutions, a depthwise one among them: the layers whose zero points repeat."""
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same")(inputs)
    x = keras.layers.ReLU(6.0)(keras.layers.BatchNormalization()(x))
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.Conv2D(16, 1, activation="relu")(x)
    x = keras.layers.Conv2D(24, 1)(x)
    return keras.Model(inputs, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x)))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    keras.utils.set_random_seed(3)
    model = _mobile_block()
    x = np.random.RandomState(0).uniform(0, 1, (64, 12, 12, 3)).astype("float32")
    folder = tmp_path_factory.mktemp("compact")
    reports = {
        compact: export.to_tflite(model, folder / f"{compact}.tflite", representative_data=x, compact=compact)
        for compact in (False, True)
    }
    reports["stripped"] = export.to_tflite(model, folder / "stripped.tflite", representative_data=x, strip_names=True)
    return reports, x


def _model(path):
    with open(path, "rb") as stream:
        content = stream.read()
    return content, schema.ModelT.InitFromPackedBuf(bytearray(content), 0)


def _run(path, x, resolver):
    interpreter = litert.Interpreter(model_path=str(path), experimental_op_resolver_type=resolver)
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.slow
def test_compact_file_is_smaller_and_carries_the_same_values(files):
    reports, _ = files
    original, before = _model(reports[False].path)
    compacted, after = _model(reports[True].path)
    assert reports[True].size_bytes == len(compacted) < 0.9 * len(original)
    assert reports[True].op_counts == reports[False].op_counts and reports[True].float_ops == []
    old, new = before.subgraphs[0].tensors, after.subgraphs[0].tensors
    graph = after.subgraphs[0]
    edges = set(graph.inputs.tolist()) | set(graph.outputs.tolist())
    constants = {i for i, t in enumerate(old) if before.buffers[t.buffer].data is not None}
    # the constants of an op whose outputs are all the model's own (named by the signature): its layer's only names
    unnamed_op = {i for op in graph.operators if set(op.outputs.tolist()) <= edges for i in op.inputs.tolist()}
    assert constants & unnamed_op, "the head's weights: the case the kept names are for"
    # the inputs and outputs keep their names, weights and biases lose theirs where their op names its output,
    # and the others keep the first op of each name scope
    expected = [
        t.name if i in edges else None if i in constants - unnamed_op else _compact.shortened_name(t.name)
        for i, t in enumerate(old)
    ]
    assert [t.name for t in new] == expected
    assert sum(len(t.name or b"") for t in new) < 0.7 * sum(map(len, (t.name for t in old)))
    per_channel = 0
    for a, b in zip(old, new):
        assert list(a.shape) == list(b.shape) and a.type == b.type and a.buffer == b.buffer
        if a.quantization is not None and a.quantization.scale is not None:
            np.testing.assert_array_equal(a.quantization.scale, b.quantization.scale)
            np.testing.assert_array_equal(a.quantization.zeroPoint, b.quantization.zeroPoint)
            assert a.quantization.quantizedDimension == b.quantization.quantizedDimension
            per_channel += len(a.quantization.scale) > 1
    assert per_channel >= 8  # weights and biases of four convolutions and a Dense: the case the repacking is for
    for a, b in zip(before.buffers, after.buffers):
        assert (a.data is None) == (b.data is None)
        if a.data is not None:
            np.testing.assert_array_equal(a.data, b.data)
    assert [s.signatureKey for s in after.signatureDefs] == [s.signatureKey for s in before.signatureDefs]


@pytest.mark.slow
def test_compact_file_computes_bit_for_bit_the_same(files):
    reports, x = files
    quantized = reports[True].inputs[0]
    x_int8 = np.clip(np.round(x / quantized.scale + quantized.zero_point), -128, 127).astype("int8")
    for resolver in (litert.OpResolverType.AUTO, litert.OpResolverType.BUILTIN_REF):  # XNNPACK, reference kernels
        compacted, converted, stripped = (_run(reports[k].path, x_int8, resolver) for k in (True, False, "stripped"))
        np.testing.assert_array_equal(compacted, converted)
        np.testing.assert_array_equal(stripped, converted)


@pytest.mark.slow
def test_stripped_file_keeps_only_the_names_a_runtime_reads(files):
    reports, x = files
    compacted, before = _model(reports[True].path)
    stripped, after = _model(reports["stripped"].path)
    assert reports["stripped"].size_bytes == len(stripped) < len(compacted) - 200
    assert reports["stripped"].op_counts == reports[True].op_counts
    assert reports["stripped"].inputs == reports[True].inputs and reports["stripped"].outputs == reports[True].outputs
    graph = after.subgraphs[0]
    edges = set(graph.inputs.tolist()) | set(graph.outputs.tolist())
    names = {index: tensor.name for index, tensor in enumerate(graph.tensors)}
    assert all(names[index] for index in edges)
    assert [index for index, name in names.items() if name] == sorted(edges)
    dropped = sum(len(tensor.name or b"") for index, tensor in enumerate(before.subgraphs[0].tensors) if index not in edges)
    assert len(compacted) - len(stripped) >= dropped  # the arrays are still stored once: stripping keeps compaction
    runner = litert.Interpreter(model_path=str(reports["stripped"].path)).get_signature_runner()
    quantized = reports["stripped"].inputs[0]
    x_int8 = np.clip(np.round(x[:4] / quantized.scale + quantized.zero_point), -128, 127).astype("int8")
    (output,) = runner(**{runner.get_input_details().popitem()[0]: x_int8}).values()
    np.testing.assert_array_equal(output, _run(reports[True].path, x_int8, litert.OpResolverType.AUTO))


def _data_offsets(content):
    """Where each constant buffer's data starts in the file, for buffers of at least 16 bytes."""
    model = schema.Model.GetRootAs(content, 0)
    starts = []
    for index in range(model.BuffersLength()):
        buffer = model.Buffers(index)
        field = buffer._tab.Offset(4)  # Buffer.data, the table's first field
        if field and buffer.DataLength() >= _compact.BUFFER_ALIGNMENT:
            starts.append(buffer._tab.Vector(field))
    return starts


@pytest.mark.slow
def test_constant_data_keeps_its_16_byte_alignment(files):
    reports, _ = files
    with open(reports[True].path, "rb") as stream:  # the converter's own file aligns them to 4 bytes only
        starts = _data_offsets(bytearray(stream.read()))
    assert len(starts) >= 5
    assert [start % _compact.BUFFER_ALIGNMENT for start in starts] == [0] * len(starts)


def test_a_file_with_constant_data_outside_the_flatbuffer_is_left_as_it_is():
    import flatbuffers

    model = schema.ModelT()
    model.version = 3
    external = schema.BufferT()
    external.offset, external.size = 4096, 16  # models over 2 GB keep their weights after the flatbuffer
    model.buffers = [schema.BufferT(), external]
    builder = flatbuffers.Builder(256)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    content = bytes(builder.Output()) + bytes(4096)
    assert _compact.compact(content) is content
    with pytest.raises(ValueError, match="after the flatbuffer"):  # asked for by name, it is refused, not skipped
        _compact.repack(content, strip_names=True)


@pytest.mark.slow
def test_names_stripped_without_sharing_keep_every_array_apart(files, tmp_path):
    reports, x = files
    original, _ = _model(reports[False].path)
    path = tmp_path / "stripped_only.tflite"
    path.write_bytes(_compact.repack(original, share_arrays=False, strip_names=True))
    stripped, after = _model(path)
    assert reports["stripped"].size_bytes < len(stripped) < len(original)  # names gone, zero points still repeated
    graph = after.subgraphs[0]
    edges = set(graph.inputs.tolist()) | set(graph.outputs.tolist())
    assert [index for index, tensor in enumerate(graph.tensors) if tensor.name] == sorted(edges)
    quantized = reports[False].inputs[0]
    x_int8 = np.clip(np.round(x / quantized.scale + quantized.zero_point), -128, 127).astype("int8")
    np.testing.assert_array_equal(_run(path, x_int8, litert.OpResolverType.AUTO),
                                  _run(reports[False].path, x_int8, litert.OpResolverType.AUTO))


def test_the_layer_of_an_op_writing_the_models_output_is_still_found_in_a_compact_file(tmp_path):
    # the head's output is named by the signature: only its weights' names say it is the `head` layer
    inputs = keras.Input((6,))
    hidden = keras.layers.Activation("tanh", name="squash")(keras.layers.Dense(8, name="hidden")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(hidden))
    export.to_tflite(model, tmp_path / "float.tflite", quantization=None)
    summary = export.inspect_tflite(str(tmp_path / "float.tflite"))
    names = summary.float_op_tensors["FULLY_CONNECTED"]
    # the two Dense layers; not `squash`, whose output the head reads but which is not a FULLY_CONNECTED op
    assert export.keras_layers_of_tensors(names, model) == ["hidden", "head"], names
    _, written = _model(tmp_path / "float.tflite")
    graph = written.subgraphs[0]
    named_constants = [t.name for t in graph.tensors if written.buffers[t.buffer].data is not None and t.name]
    assert named_constants and all(b"head" in name for name in named_constants), named_constants
