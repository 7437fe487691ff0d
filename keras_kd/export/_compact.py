"""Writes a `.tflite` flatbuffer again: each repeated array stored once, names optional.

A per-channel INT8 convolution carries, for its weights and again for its
int32 bias, one float32 scale and one int64 zero point per output channel.
The zero points are all 0 and the converter writes a fresh copy of them for
every tensor: in a small mobile network they are about a fifth of the file.
A flatbuffer may point many tables at one vector, so `compact` repacks the
model with every identical numeric array (zero points, equal scales, shapes,
identical constant buffers) written once. The values the runtime reads are
the same, bit for bit. Constant buffers start on 16-byte boundaries (the
converter's own file aligns them to 4), so int32 and float data are read in
place on any target.

The converter names each fused op's output after every TensorFlow op fused
into it (`model/block/Relu6;model/block/BiasAdd;model/block/Conv2D`): in a
network under 100 K parameters the names weigh as much as the weights. The
runtime never reads them. `compact` keeps, of each name, the first op of each
name scope (`model/block/Relu6`): every Keras layer and nested model a name
listed stays in it, which is what `keras_kd.quantization.compare_layers` and
the export errors read to find a layer's tensors. It drops the names of the
constants (weights, biases: half the names of a MobileNet), whose layer
the output of the op reading them already names; an op whose outputs name
no layer (the model's outputs, named by its signature) keeps its constants'
names, so `inspect_tflite` can still say which layer it came from. `repack(...,
strip_names=True)` drops the intermediate names altogether. The inputs,
outputs and signatures keep their names either way.
"""

import numpy as np

#: Alignment of constant buffer data in the repacked file.
BUFFER_ALIGNMENT = 16

__all__ = ["compact", "expose_tensors", "names_a_layer", "repack", "shortened_name"]


def compact(content):
    """`content` (the bytes of a `.tflite` file) with repeated arrays stored once and names cut to one op per scope.

    Returns `content` unchanged when it cannot be repacked safely: a file whose
    constant data lies outside the flatbuffer (models over 2 GB), or an
    environment without the TFLite schema module.
    """
    try:
        return repack(content, shorten_names=True)
    except _CannotRepack:
        return content


def repack(content, share_arrays=True, strip_names=False, shorten_names=False):
    """`content` written again, with repeated arrays stored once and/or intermediate tensor names cut or dropped.

    Args:
        content: the bytes of a `.tflite` file.
        share_arrays: store each repeated numeric array once.
        strip_names: drop the name of every tensor that is not an input or an
            output of its subgraph.
        shorten_names: keep, of each such name, the first TensorFlow op of
            each name scope it lists (`a/conv/Relu;a/conv/BiasAdd` becomes
            `a/conv/Relu`), and drop the names of constants read by an op
            whose output is named.

    Returns:
        The new bytes; `content` itself when repacking without `strip_names`
        saves nothing.

    Raises:
        ValueError: the file keeps constant data after the flatbuffer (models
            over 2 GB), or the TFLite schema module is missing.
    """
    model = _unpack(content)
    if strip_names:
        _rename_intermediates(model, lambda name: None)
    elif shorten_names:
        _rename_intermediates(model, shortened_name, drop_constants=True)
    packed = _pack(model, len(content), share_arrays)
    return packed if strip_names or len(packed) < len(content) else content


def expose_tensors(content):
    """`content` with the output of every op also an output of its subgraph.

    XNNPACK, the default delegate, keeps no intermediate tensors readable
    (`experimental_preserve_all_tensors` only works without it); a subgraph
    output it must write. The ops, their kernels and the values are the same:
    XNNPACK computes each int8 op into an int8 tensor either way. The
    signatures keep their outputs.

    Raises:
        ValueError: as `repack`.
    """
    model = _unpack(content)
    for subgraph in model.subgraphs or ():
        outputs = _ints(subgraph.outputs)
        listed = set(outputs)
        for operator in subgraph.operators or ():
            for index in _ints(operator.outputs):
                if index >= 0 and index not in listed:
                    outputs.append(index)
                    listed.add(index)
        subgraph.outputs = np.asarray(outputs, np.int32)
    return _pack(model, len(content), share=False)


def _unpack(content):
    """The file's flatbuffer as the schema's object tree; `_CannotRepack` where it cannot be written again."""
    try:
        import flatbuffers  # noqa: F401 - `_pack` writes with it
        from tensorflow.lite.python import schema_py_generated as schema
    except ImportError as error:  # both ship with TensorFlow
        raise _CannotRepack(f"the TFLite flatbuffer schema could not be imported ({error})") from error
    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    if any(buffer.offset and buffer.offset > 1 for buffer in model.buffers or ()):
        raise _CannotRepack("the file keeps its constant data after the flatbuffer (a model over 2 GB)")
    return model


def _pack(model, size, share):
    import flatbuffers

    builder = _SharingBuilder(flatbuffers, max(1024, size // 2), share)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


class _CannotRepack(ValueError):
    """The file cannot be written again safely; `compact` then keeps it as converted."""


def _rename_intermediates(model, rename, drop_constants=False):
    """Gives each named tensor that is not an input or an output of its subgraph the name `rename(name)`.

    With `drop_constants`, a constant (weights, a bias) loses its name instead, unless it is read by an op
    none of whose outputs `names_a_layer` (the model's last Dense, whose output the signature names): a
    reader of the file (`keras_kd.export.inspect_tflite`) then names that op's layer from its weights.
    """
    buffers = model.buffers or ()
    for subgraph in model.subgraphs or ():
        tensors = subgraph.tensors or ()
        edges = set(_ints(subgraph.inputs)) | set(_ints(subgraph.outputs))
        unnamed = set()
        if drop_constants:
            unnamed = {index for index, tensor in enumerate(tensors) if _is_constant(tensor, buffers)}
            for operator in subgraph.operators or ():
                if not any(names_a_layer(tensors[index].name) for index in _ints(operator.outputs) if index >= 0):
                    unnamed.difference_update(_ints(operator.inputs))
        for index, tensor in enumerate(tensors):
            if index in edges or not tensor.name:
                continue
            if index in unnamed:
                tensor.name = None
            else:
                tensor.name = rename(tensor.name)


def names_a_layer(name):
    """Whether a TFLite tensor name (str, bytes or None) says which layer computed it: a name scope.

    The converter names an op's output after the TensorFlow ops it fused (`model/dense/MatMul`); a
    model output takes the signature's name instead, which names no layer.

    >>> names_a_layer("model/dense/MatMul"), names_a_layer("StatefulPartitionedCall:0"), names_a_layer(None)
    (True, False, False)
    """
    if not name:
        return False
    return "/" in (name.decode("utf-8", "replace") if isinstance(name, bytes) else name)


def _is_constant(tensor, buffers):
    data = buffers[tensor.buffer].data if tensor.buffer < len(buffers) else None
    return data is not None and len(data) > 0


def shortened_name(name):
    """`name` (a TFLite tensor name, str or bytes) with only the first op of each name scope it lists.

    The converter joins with `;` the TensorFlow ops fused into one TFLite op. Two
    ops in one scope (`a/conv/BiasAdd`, `a/conv/Conv2D`) name the same Keras
    layer, so the second adds nothing a reader of the name can use.

    >>> shortened_name("m/conv/Relu6;m/conv/BiasAdd;m/bn/FusedBatchNormV3;m/conv/Conv2D")
    'm/conv/Relu6;m/bn/FusedBatchNormV3'
    >>> shortened_name("m/act/mul;")
    'm/act/mul'
    """
    text = name.decode("utf-8") if isinstance(name, bytes) else name
    kept, scopes = [], set()
    for part in text.split(";"):
        if not part:  # the converter leaves empty entries (`a/mul;`, `a/x;;a/y`)
            continue
        scope = part.rsplit("/", 1)[0] if "/" in part else part
        if scope not in scopes:
            scopes.add(scope)
            kept.append(part)
    short = ";".join(kept)
    return short.encode("utf-8") if isinstance(name, bytes) else short


def _ints(array):
    return [] if array is None else np.asarray(array).ravel().tolist()


def _SharingBuilder(flatbuffers, size, share=True):
    """A flatbuffers Builder aligning constant data to 16 bytes; with `share`, each numeric vector is written once."""

    class SharingBuilder(flatbuffers.Builder):
        def __init__(self):
            super().__init__(size)
            self._written = {}

        def CreateNumpyVector(self, x):  # noqa: N802 - the flatbuffers API's name
            x = np.ascontiguousarray(x)
            key = (x.dtype.str, x.shape, x.tobytes()) if share else None
            offset = self._written.get(key)
            if offset is None:
                if x.dtype.itemsize == 1 and x.size >= BUFFER_ALIGNMENT:
                    offset = self._aligned_bytes(x)
                else:
                    offset = super().CreateNumpyVector(x)
                if share:
                    self._written[key] = offset
            return offset

        def _aligned_bytes(self, x):
            # constant data is read in place as int32/float arrays: start it on a 16-byte boundary
            self.StartVector(1, x.size, BUFFER_ALIGNMENT)
            payload = x.tobytes(order="C")
            self.head -= len(payload)
            self.Bytes[self.head : self.head + len(payload)] = payload
            self.vectorNumElems = x.size
            return self.EndVector()

    return SharingBuilder()
