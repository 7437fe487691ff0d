"""Loading a `.tflite` file into an interpreter, and moving data in and out of it.

ai-edge-litert is the interpreter keras_kd uses. `tflite-runtime` 2.14 (the
last release) is accepted as a fallback only where it imports and can
actually build an interpreter: it is compiled against NumPy 1 and fails under
NumPy 2. Both are imported lazily, inside the functions that need them.
"""

import os

import numpy as np

__all__ = [
    "XNNPackPrepareError",
    "signature_position",
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


class XNNPackPrepareError(RuntimeError):
    """XNNPACK (LiteRT's default CPU delegate) refused to prepare a `.tflite` file.

    The message names the tensors whose quantization scales XNNPACK cannot
    requantize between, and how to fix the file.

    Attributes:
        problems: one dict per offending op: `op`, `tensor` (its output),
            `output_scale`, `input_scales` and `ratio`.
        explanation: the message without its first sentence (which file failed).
    """

    def __init__(self, message, problems=(), explanation=""):
        super().__init__(message)
        self.problems = list(problems)
        self.explanation = explanation


# XNNPACK requantizes with a fixed-point multiplier and refuses an op whose
# (input scales product) / (output scale) is >= 2**8 (or, for convolutions and
# fully connected layers, below 2**-32).
_XNNPACK_MAX_RATIO = 256.0
_XNNPACK_MIN_RATIO = 2.0**-32
# ops whose output scale is compared with the product of their two (data, weight or second-operand) input scales
_PRODUCT_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL", "MUL"})
_SCALE_OPS = frozenset({"ADD", "SUB", "AVERAGE_POOL_2D", "MEAN", "SUM", "CONCATENATION", "HARD_SWISH", "LEAKY_RELU",
                        "PRELU", "SQUARED_DIFFERENCE", "RESIZE_BILINEAR", "PAD"})


def _scales(subgraph, index):
    if index < 0:
        return None
    quantization = subgraph.Tensors(index).Quantization()
    if quantization is None or quantization.ScaleLength() == 0:
        return None
    return [float(value) for value in quantization.ScaleAsNumpy()]


def requantization_problems(content):
    """The ops of a `.tflite` file whose scale ratios are outside what XNNPACK accepts.

    A near-constant activation (an all-zero squeeze channel of a
    squeeze-and-excite block, a dead ReLU unit) is calibrated to a range of
    about 0 and gets a tiny scale (1e-8); the op writing it then has an
    input-to-output scale ratio far over XNNPACK's limit of 256.

    Args:
        content: the file's bytes.

    Returns:
        A list of dicts (`op`, `tensor`, `output_scale`, `input_scales`,
        `ratio`), worst first; empty when every ratio is in range.
    """
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(bytes(content), 0)
    op_names = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    codes = []
    for index in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(index)
        codes.append(op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM"))
    problems = []
    for subgraph_index in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(subgraph_index)
        for op_index in range(subgraph.OperatorsLength()):
            operator = subgraph.Operators(op_index)
            name = codes[operator.OpcodeIndex()]
            if name not in _PRODUCT_OPS and name not in _SCALE_OPS:
                continue
            inputs = [int(i) for i in operator.InputsAsNumpy()] if operator.InputsLength() else []
            outputs = [int(i) for i in operator.OutputsAsNumpy()] if operator.OutputsLength() else []
            if not inputs or not outputs:
                continue
            output_scale = _scales(subgraph, outputs[0])
            if not output_scale or output_scale[0] <= 0:
                continue
            if name in _PRODUCT_OPS:
                first, second = _scales(subgraph, inputs[0]), _scales(subgraph, inputs[1]) if len(inputs) > 1 else None
                if not first or not second:
                    continue
                input_scales = [first[0], max(second)]
                ratio = first[0] * max(second) / output_scale[0]
                low = first[0] * min(second) / output_scale[0]
                out_of_range = ratio >= _XNNPACK_MAX_RATIO or (name != "MUL" and low < _XNNPACK_MIN_RATIO)
            else:
                input_scales = [s[0] for s in (_scales(subgraph, i) for i in inputs) if s]
                if not input_scales:
                    continue
                ratio = max(input_scales) / output_scale[0]
                out_of_range = ratio >= _XNNPACK_MAX_RATIO
            if out_of_range:
                tensor = subgraph.Tensors(outputs[0]).Name()
                problems.append({
                    "op": name,
                    "tensor": tensor.decode("utf-8", "replace") if isinstance(tensor, bytes) else str(tensor),
                    "output_scale": output_scale[0],
                    "input_scales": input_scales,
                    "ratio": ratio,
                })
    return sorted(problems, key=lambda problem: -problem["ratio"])


def _explain_xnnpack(error, content, source):
    """An `XNNPackPrepareError` naming the tensors behind XNNPACK's refusal, or None when none is found."""
    try:
        problems = requantization_problems(content)
    except Exception:  # noqa: BLE001 - a file we cannot read: keep XNNPACK's own message
        problems = []
    lines = [
        f"XNNPACK, LiteRT's default CPU delegate, could not prepare {source} ({str(error).strip()})."
    ]
    if problems:
        shown = problems[:5]
        lines.append(
            "These ops requantize by a scale ratio XNNPACK cannot represent (it accepts ratios below 256): "
            + "; ".join(
                f"{p['op']} writing {p['tensor']!r} (output scale {p['output_scale']:.3g}, input scales "
                + " x ".join(f"{s:.3g}" for s in p["input_scales"]) + f", ratio {p['ratio']:.3g})"
                for p in shown
            )
            + (f"; and {len(problems) - len(shown)} more" if len(problems) > len(shown) else "")
            + "."
        )
        lines.append(
            "A tiny output scale means the tensor was (almost) constant during calibration or training: a dead "
            "ReLU unit or an all-zero squeeze channel of a squeeze-and-excite block gets a range of about 0. "
            "To fix: calibrate on representative_data in which that layer is active (more, and more varied, "
            "inputs preprocessed like training); remove or re-initialize the dead unit; or train it "
            "quantization-aware (keras_kd.quantization) with a floor on tiny activation ranges. Running without "
            "XNNPACK (load_interpreter(..., use_xnnpack=False), `keras-kd benchmark --no-xnnpack`) works around "
            "it on this host only: phones running XNNPACK will refuse the file the same way."
        )
    else:
        lines.append(
            "No scale ratio out of XNNPACK's range was found; run without XNNPACK "
            "(load_interpreter(..., use_xnnpack=False)) to tell whether the file itself is at fault."
        )
    return XNNPackPrepareError(" ".join(lines), problems, " ".join(lines[1:]))


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


def load_interpreter(model, num_threads=None, use_xnnpack=True, preserve_all_tensors=False):
    """Builds an allocated interpreter for a `.tflite` file or its bytes.

    Args:
        model: a path to a `.tflite` file, or the file's content as `bytes`.
        num_threads: CPU threads for the interpreter; `None` lets LiteRT choose.
        use_xnnpack: when False, the default XNNPACK delegate is not applied
            (plain builtin kernels), for comparisons.
        preserve_all_tensors: keep every intermediate tensor readable after
            `invoke()` (`get_tensor` on any index), for layer-by-layer
            comparisons. XNNPACK keeps none, so with `use_xnnpack` the
            interpreter runs a copy of the file whose every op output is also
            a subgraph output (same ops, kernels and values; the signatures
            are unchanged); without it, the builtin kernels keep them.

    Returns:
        An interpreter with its tensors allocated.

    Raises:
        FileNotFoundError: `model` is a path that does not exist.
        ValueError: the file is not a valid TFLite flatbuffer.
        ImportError: no working interpreter package is installed.
        XNNPackPrepareError: XNNPACK cannot prepare the file; the message
            names the tensors whose quantization scales it cannot requantize
            between, and the fix.

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
    if preserve_all_tensors and use_xnnpack:  # a delegate keeps only the tensors its subgraph outputs
        kwargs.pop("model_path", None)
        kwargs["model_content"] = _every_tensor_an_output(model)
    elif preserve_all_tensors:
        kwargs["experimental_preserve_all_tensors"] = True
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
        except RuntimeError as error:
            if use_xnnpack and "xnnpack" in str(error).lower():
                if "model_content" in kwargs:
                    content, source = kwargs["model_content"], "the .tflite file"
                else:
                    with open(kwargs["model_path"], "rb") as handle:
                        content = handle.read()
                    source = repr(kwargs["model_path"])
                raise _explain_xnnpack(error, content, source) from error
            errors.append(f"{name}: {error}")
        except (ImportError, AttributeError) as error:
            errors.append(f"{name}: {error}")
    if not errors:
        raise ImportError(_INSTALL_HINT)
    raise RuntimeError("No TFLite interpreter could load the model: " + "; ".join(errors) + ". " + _INSTALL_HINT)


def _every_tensor_an_output(model):
    """The bytes of `model` (a path or bytes) with every op's output listed as a subgraph output."""
    from keras_kd.export._compact import expose_tensors

    if not isinstance(model, (bytes, bytearray)):
        with open(os.fspath(model), "rb") as handle:
            model = handle.read()
    try:
        return expose_tensors(bytes(model))
    except ValueError as error:
        raise ValueError(
            f"Cannot keep the intermediate tensors readable under XNNPACK: {error}. Pass use_xnnpack=False to "
            "read them from the builtin kernels instead."
        ) from error
    except Exception:  # noqa: BLE001 - not a flatbuffer the schema reads: loading it says what is wrong
        return bytes(model)


def _signature_order(interpreter, details, kind):
    """`details` sorted as the file's signature lists its `kind` ("inputs" or "outputs").

    `get_input_details()` / `get_output_details()` list tensors in the order of
    the converted graph, which for a model with several inputs or outputs is
    often not the Keras model's (two inputs can come back reversed). The serving
    signature names them `input_0, input_1, ...` and `output_0, ...` in the
    Keras order, so those names decide; a file without a signature keeps the
    interpreter's order. Where the file lists more tensors than its signature
    (`load_interpreter(..., preserve_all_tensors=True)` on XNNPACK makes every
    intermediate tensor an output), only the signature's are kept.
    """
    try:
        signatures = interpreter._get_full_signature_list()
    except AttributeError:  # an interpreter without signature support
        return details
    if len(signatures) != 1 or len(details) < 2:
        return details
    names = next(iter(signatures.values())).get(kind, {})
    by_index = {detail["index"]: detail for detail in details}
    if not names or not set(names.values()) <= set(by_index):
        return details

    return [by_index[names[name]] for name in sorted(names, key=signature_position)]


def signature_position(name):
    """Sort key of a signature's tensor names: `input_2` before `input_10`, numbered names first."""
    stem, _, number = name.rpartition("_")
    return (0, stem, int(number)) if number.isdigit() else (1, name, 0)


def input_details(interpreter):
    """The interpreter's input details, in the Keras model's input order (by signature name, not file order)."""
    return _signature_order(interpreter, interpreter.get_input_details(), "inputs")


def output_details(interpreter):
    """The interpreter's output details, in the Keras model's output order (by signature name, not file order)."""
    return _signature_order(interpreter, interpreter.get_output_details(), "outputs")


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
