"""Writes a `.tflite` flatbuffer again with each repeated array stored once.

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
"""

import numpy as np

#: Alignment of constant buffer data in the repacked file.
BUFFER_ALIGNMENT = 16

__all__ = ["compact"]


def compact(content):
    """`content` (the bytes of a `.tflite` file) with repeated arrays stored once.

    Returns `content` unchanged when it cannot be repacked safely: a file whose
    constant data lies outside the flatbuffer (models over 2 GB), or an
    environment without the TFLite schema module.
    """
    try:
        import flatbuffers
        from tensorflow.lite.python import schema_py_generated as schema
    except ImportError:  # the schema ships with TensorFlow; without it the file stays as converted
        return content
    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    if any(buffer.offset and buffer.offset > 1 for buffer in model.buffers or ()):
        return content  # constant data appended after the flatbuffer: offsets would move
    builder = _SharingBuilder(flatbuffers, max(1024, len(content) // 2))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    packed = bytes(builder.Output())
    return packed if len(packed) < len(content) else content


def _SharingBuilder(flatbuffers, size):
    """A flatbuffers Builder whose numeric vectors are written once per distinct value."""

    class SharingBuilder(flatbuffers.Builder):
        def __init__(self):
            super().__init__(size)
            self._written = {}

        def CreateNumpyVector(self, x):  # noqa: N802 - the flatbuffers API's name
            x = np.ascontiguousarray(x)
            key = (x.dtype.str, x.shape, x.tobytes())
            offset = self._written.get(key)
            if offset is None:
                if x.dtype.itemsize == 1 and x.size >= BUFFER_ALIGNMENT:
                    offset = self._aligned_bytes(x)
                else:
                    offset = super().CreateNumpyVector(x)
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
