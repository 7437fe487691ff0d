"""Loading a `.tflite` file into an interpreter, and moving data in and out of it.

ai-edge-litert is the interpreter keras_kd uses. `tflite-runtime` 2.14 (the
last release) is accepted as a fallback only where it imports and can
actually build an interpreter: it is compiled against NumPy 1 and fails under
NumPy 2. Both are imported lazily, inside the functions that need them.
"""

import os

import numpy as np

__all__ = [
    "load_interpreter",
    "interpreter_backend",
    "quantize_input",
    "dequantize_output",
    "input_details",
    "output_details",
]

_INSTALL_HINT = (
    "Running a .tflite file needs the LiteRT interpreter: `pip install ai-edge-litert` "
    "(it is a dependency of keras-kd, so reinstalling keras-kd also brings it)."
)


def _interpreter_classes():
    """Yields (backend name, Interpreter class, OpResolverType or None) in order of preference."""
    try:
        from ai_edge_litert import interpreter as litert

        yield "ai_edge_litert", litert.Interpreter, litert.OpResolverType
    except ImportError:
        pass
    try:  # optional fallback: only useful under NumPy 1
        from tflite_runtime import interpreter as tflite_runtime

        yield "tflite_runtime", tflite_runtime.Interpreter, getattr(tflite_runtime, "OpResolverType", None)
    except ImportError:
        pass


def interpreter_backend():
    """Returns the name of the interpreter package that `load_interpreter` would use.

    Example:

    >>> interpreter_backend() in ("ai_edge_litert", "tflite_runtime")
    True
    """
    for name, _, _ in _interpreter_classes():
        return name
    raise ImportError(_INSTALL_HINT)


def load_interpreter(model, num_threads=None, use_xnnpack=True):
    """Builds an allocated interpreter for a `.tflite` file or its bytes.

    Args:
        model: a path to a `.tflite` file, or the file's content as `bytes`.
        num_threads: CPU threads for the interpreter; `None` lets LiteRT choose.
        use_xnnpack: when False, the default XNNPACK delegate is not applied
            (plain builtin kernels), for comparisons.

    Returns:
        An interpreter with its tensors allocated.

    Raises:
        FileNotFoundError: `model` is a path that does not exist.
        ValueError: the file is not a valid TFLite flatbuffer.
        ImportError: no working interpreter package is installed.

    Example:

    ```python
    interpreter = load_interpreter("student_int8.tflite", num_threads=1)
    interpreter.get_input_details()[0]["dtype"]  # numpy.int8
    ```
    """
    kwargs = {}
    if isinstance(model, (bytes, bytearray)):
        kwargs["model_content"] = bytes(model)
    else:
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No .tflite file at {path!r}. Pass the path that `to_tflite` returned.")
        kwargs["model_path"] = path
    if num_threads is not None:
        if int(num_threads) < 1:
            raise ValueError(f"num_threads must be a positive integer or None, got {num_threads!r}.")
        kwargs["num_threads"] = int(num_threads)
    errors = []
    for name, cls, resolver in _interpreter_classes():
        options = dict(kwargs)
        if not use_xnnpack and resolver is not None:
            options["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            interpreter = cls(**options)
            interpreter.allocate_tensors()
            return interpreter
        except ValueError as error:
            if "model" in str(error).lower() and name == "ai_edge_litert":
                raise ValueError(
                    f"Could not load the TFLite model ({error}). Is it a .tflite flatbuffer written by "
                    "keras_kd.export.to_tflite or tf.lite.TFLiteConverter?"
                ) from error
            errors.append(f"{name}: {error}")
        except (RuntimeError, ImportError, AttributeError) as error:
            errors.append(f"{name}: {error}")
    if not errors:
        raise ImportError(_INSTALL_HINT)
    raise RuntimeError("No TFLite interpreter could load the model: " + "; ".join(errors) + ". " + _INSTALL_HINT)


def input_details(interpreter):
    """The interpreter's input details, in the order of the model's signature inputs."""
    return interpreter.get_input_details()


def output_details(interpreter):
    """The interpreter's output details."""
    return interpreter.get_output_details()


def quantize_input(values, detail):
    """Converts float `values` to the dtype of an interpreter input, using its own scale/zero point.

    Float inputs are cast; integer inputs are quantized as
    `q = clip(round(x / scale) + zero_point)` with the tensor's parameters.
    """
    dtype = np.dtype(detail["dtype"])
    values = np.asarray(values)
    if dtype.kind == "f":
        return values.astype(dtype)
    scale, zero_point = detail["quantization"]
    if scale == 0:  # an integer input that is not quantized (ids, indices)
        return values.astype(dtype)
    info = np.iinfo(dtype)
    quantized = np.round(values.astype(np.float64) / scale) + zero_point
    return np.clip(quantized, info.min, info.max).astype(dtype)


def dequantize_output(values, detail):
    """Converts an interpreter output to float32 with the tensor's scale/zero point."""
    values = np.asarray(values)
    scale, zero_point = detail["quantization"]
    if np.dtype(detail["dtype"]).kind == "f" or scale == 0:
        return values.astype(np.float32)
    return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)
