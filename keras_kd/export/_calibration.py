"""The model's input specs, and calibration data checked against them."""

import contextlib
import importlib

import numpy as np

from keras_kd.backend import LEGACY_KERAS, keras, tf


def _dtype_name(spec):
    return tf.as_dtype(spec.dtype).name


def expected_shape(shape):
    """'(num_samples, 8, 8, 1)' for an input spec shape whose first entry is the batch."""
    return "(num_samples, " + ", ".join("?" if d is None else str(d) for d in shape[1:]) + ")"


def _recorded_input_signature(model):
    """Keras 3 records the input shapes of a subclassed model's first call; its exporter reads them."""
    if LEGACY_KERAS or not getattr(model, "built", False):
        return None
    try:  # a private Keras helper: if it moves, fall back to the data or input_shape
        export_utils = importlib.import_module(keras.__name__ + ".src.export.export_utils")
        signature = export_utils.get_input_signature(model)
    except Exception:  # noqa: BLE001 - any failure here only means "shape unknown"
        return None
    flat = tf.nest.flatten(signature)
    return flat if all(hasattr(spec, "shape") and hasattr(spec, "dtype") for spec in flat) else None


def input_specs(model, batch_size, data_hint=None):
    """(name, shape with batch, dtype) of each model input, from the model or else from data."""
    inputs = None
    with contextlib.suppress(AttributeError, ValueError):
        inputs = model.inputs
    specs = []
    if inputs:
        for index, tensor in enumerate(inputs):
            shape = [None if d is None else int(d) for d in tuple(tensor.shape)]
            dtype = tf.as_dtype(tensor.dtype).name
            name = getattr(tensor, "name", None) or f"input_{index}"
            specs.append((name, [batch_size, *shape[1:]], dtype))
        return specs
    recorded = _recorded_input_signature(model)
    if recorded:
        return [
            (getattr(spec, "name", None) or f"input_{index}", [batch_size, *list(spec.shape)[1:]], _dtype_name(spec))
            for index, spec in enumerate(recorded)
        ]
    if data_hint is not None:
        sample = np.asarray(data_hint)
        if sample.ndim >= 1 and sample.dtype.kind in "biuf":
            dtype = sample.dtype.name if sample.dtype.kind == "f" else "float32"
            return [("input_0", [batch_size, *sample.shape[1:]], dtype)]
    raise ValueError(
        f"{type(model).__name__} has no defined inputs, so its input shape is unknown. Build it with "
        "keras.Input(shape=...), call it once on a batch, or pass input_shape=(...) (without the batch) to to_tflite."
    )


def first_inputs(data):
    """The inputs part of x, (x,), (x, y) or (x, y, sample_weight)."""
    if isinstance(data, tuple) and 1 <= len(data) <= 3:
        return data[0]
    return data


def calibration_arrays(data, specs, num_samples, argument="representative_data"):
    """Turns calibration data into one float array per input, checked against the model's inputs."""
    if isinstance(data, tf.data.Dataset):
        chunks = []
        taken = 0
        for element in data:
            element = first_inputs(element)
            array = np.asarray(element)
            if array.ndim == len(specs[0][1]) - 1:  # an unbatched dataset
                array = array[None]
            chunks.append(array)
            taken += len(array)
            if taken >= num_samples:
                break
        data = np.concatenate(chunks) if chunks else np.zeros((0,), np.float32)
    elif callable(data):
        raise TypeError(
            f"{argument} is a callable; pass the samples themselves (an array of shape (num_samples, ...), "
            "(x, y), or a tf.data.Dataset) so they can be checked against the model's input shape."
        )
    data = first_inputs(data)
    arrays = list(data) if isinstance(data, list) else [data]
    if len(arrays) != len(specs):
        raise ValueError(
            f"{argument} holds {len(arrays)} input arrays but the model has {len(specs)} inputs "
            f"({', '.join(name for name, _, _ in specs)}). Pass one array per input, in order."
        )
    result = []
    for array, (name, shape, dtype) in zip(arrays, specs):
        expected = expected_shape(shape)
        try:
            array = np.asarray(array)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{argument} for input {name!r} is not an array ({error}); expected {expected}.") from None
        if array.size == 0 or array.ndim == 0 or len(array) == 0:
            raise ValueError(
                f"{argument} is empty (shape {array.shape}); calibration needs samples of shape {expected} "
                "for input {name!r}: pass a few hundred typical training inputs.".replace("{name!r}", repr(name))
            )
        if array.dtype.kind not in "biuf":
            raise ValueError(
                f"{argument} has dtype {array.dtype} but input {name!r} takes {dtype} values of shape {expected}. "
                "Pass numeric arrays preprocessed like the training inputs."
            )
        if array.dtype.kind == "f":
            finite = np.isfinite(array.reshape(len(array), -1)).all(axis=1)
            if not finite.all():
                bad = np.flatnonzero(~finite)
                values = array[bad[0]][~np.isfinite(array[bad[0]])]
                raise ValueError(
                    f"{argument} for input {name!r} holds non-finite values (NaN or inf): {len(bad)} of its "
                    f"{len(array)} samples, the first at index {int(bad[0])} (value {values.ravel()[0]!r}). "
                    "Calibration would derive the INT8 ranges from them. Remove or repair those samples "
                    "(e.g. x[np.isfinite(x).reshape(len(x), -1).all(axis=1)]) and check the preprocessing."
                )
        sample_shape = tuple(array.shape[1:])
        wanted = shape[1:]
        if len(sample_shape) != len(wanted) or any(w is not None and w != s for w, s in zip(wanted, sample_shape)):
            raise ValueError(
                f"{argument} has shape {tuple(array.shape)} but input {name!r} expects {expected} ({dtype}). "
                "Reshape it like the training inputs (e.g. add the channel axis with x[..., None])."
            )
        if len(array) > num_samples:  # evenly spread: datasets are often sorted by class
            array = array[np.linspace(0, len(array) - 1, num_samples).round().astype(int)]
        result.append(array.astype(dtype))
    return result
