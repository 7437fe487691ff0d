"""`compare_layers`: where an INT8 file drifts from its quantization-aware Keras model.

The file is run with every intermediate tensor kept; each quantized layer of
the Keras model (a `FakeQuant`, `QuantizedWeights`, `QuantizedActivation`, ...)
is matched to the file's tensor that carries its output (TFLite tensor names
keep the Keras layer names), and the two are compared on the same inputs. The
first layer whose drift jumps is the one that breaks INT8 accuracy.
"""

import dataclasses
import re

import numpy as np

from keras_kd.backend import keras

__all__ = ["LayerDrift", "compare_layers"]


@dataclasses.dataclass
class LayerDrift:
    """How far one layer's output in the INT8 file is from the Keras QAT model.

    Attributes:
        name: the Keras layer.
        class_name: its class.
        tensor: the `.tflite` tensor compared with it.
        scale: that tensor's quantization scale (one int8 step).
        max_abs_diff, mean_abs_diff: over all compared values, in float units.
        max_steps: `max_abs_diff / scale`: 1 or 2 is rounding; more is drift.
        relative: `mean_abs_diff` over the mean |value| of the Keras output.
    """

    name: str
    class_name: str
    tensor: str
    scale: float
    max_abs_diff: float
    mean_abs_diff: float
    max_steps: float
    relative: float


def _quantized_layers(model):
    from keras_kd.quantization.quantize import _QUANTIZED_CLASSES

    return [layer for layer in model.layers if isinstance(layer, _QUANTIZED_CLASSES)]


def _op_outputs(interpreter):
    """Tensor indices in the order the ops produce them."""
    order = []
    for op in interpreter._get_ops_details():
        order.extend(index for index in op["outputs"] if index >= 0)
    return order


def _matches(tensor_name, layer_name):
    pattern = re.compile(rf"(^|/){re.escape(layer_name)}(_\d+)?(/|;|$)")
    return any(pattern.search(part) for part in tensor_name.split(";"))


def compare_layers(model, tflite_path, x, max_samples=64):
    """Layer by layer, how far the INT8 file's intermediate tensors are from the Keras QAT model.

    Args:
        model: the quantization-aware Keras model the file was converted from
            (`quantize_model`'s result, trained).
        tflite_path: the `.tflite` file (a path or its bytes).
        x: inputs, as for `model.predict` (at most `max_samples` are used).
        max_samples: how many samples to compare.

    Returns:
        A list of `LayerDrift`, in the Keras model's layer order, for every
        top-level quantized layer whose tensor the file has (a layer fused into
        the op before it, or inside a nested model, has no tensor of its own
        and is left out).

    Raises:
        ValueError: `model` has no quantized layers, or the file has one input
            and `x` does not fit it.

    Example:

    ```python
    for row in compare_layers(qat_student, "student_int8.tflite", x_val[:32]):
        print(f"{row.name:30s} {row.max_steps:6.1f} steps  {row.relative:.3f}")
    ```
    """
    from keras_kd.interpreter import dequantize_output, load_interpreter, quantize_input

    layers = _quantized_layers(model)
    if not layers:
        raise ValueError(
            f"compare_layers needs a quantization-aware model (from keras_kd.quantization.quantize_model); "
            f"{model.name!r} has no quantized layers."
        )
    x = np.asarray(x)[: int(max_samples)]
    interpreter = load_interpreter(tflite_path, preserve_all_tensors=True)
    detail = interpreter.get_input_details()[0]
    if tuple(detail["shape"][1:]) != tuple(x.shape[1:]):
        raise ValueError(
            f"x has samples of shape {tuple(x.shape[1:])} but the file's input is {tuple(detail['shape'][1:])}; "
            "pass inputs shaped like the model's."
        )
    interpreter.resize_tensor_input(detail["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], quantize_input(x, detail))
    interpreter.invoke()
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    order = _op_outputs(interpreter)

    probe = keras.Model(model.inputs, [layer.output for layer in layers])
    keras_outputs = probe.predict(x, verbose=0, batch_size=len(x))
    if len(layers) == 1:
        keras_outputs = [keras_outputs]
    rows = []
    for layer, expected in zip(layers, keras_outputs):
        expected = np.asarray(expected, np.float32)
        candidates = [
            index
            for index in order
            if _matches(details[index]["name"], layer.name)
            and tuple(details[index]["shape"]) == expected.shape
            and details[index]["quantization"][0] > 0
        ]
        if not candidates:
            continue
        index = candidates[-1]  # the layer's last op: its quantized output
        actual = dequantize_output(interpreter.get_tensor(index), details[index])
        difference = np.abs(actual - expected)
        scale = float(details[index]["quantization"][0])
        rows.append(
            LayerDrift(
                name=layer.name,
                class_name=type(layer).__name__,
                tensor=details[index]["name"],
                scale=scale,
                max_abs_diff=float(difference.max()),
                mean_abs_diff=float(difference.mean()),
                max_steps=float(difference.max() / scale),
                relative=float(difference.mean() / max(np.abs(expected).mean(), 1e-12)),
            )
        )
    return rows
