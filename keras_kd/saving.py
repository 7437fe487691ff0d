"""Loading a saved `.keras` file that holds keras_kd objects (QAT layers, a Distiller, its losses).

Keras finds a custom class by the name it was registered under, and a class is
registered when its module is imported. `import keras_kd` imports nothing until
a name is used, so `keras.models.load_model("student_qat.keras")` right after it
fails with "Could not locate class 'FakeQuant'". `load_model` imports every
module that registers a class first; keras_kd's own loaders (`to_tflite` given
a path, the `keras-kd` command) go through it.
"""

import importlib

__all__ = ["load_model", "register_serializables"]

# Every module with a `register_keras_serializable` class (tests/test_saving.py checks this against the
# source, so a new one cannot be forgotten here).
SERIALIZABLE_MODULES = (
    "keras_kd.augment",
    "keras_kd.distiller",
    "keras_kd.losses",
    "keras_kd.quantization.layers",
    "keras_kd.schedules",
    "keras_kd.schemes",
)


def register_serializables():
    """Import every keras_kd module that registers a Keras-serializable class."""
    for module in SERIALIZABLE_MODULES:
        importlib.import_module(module)


def load_model(filepath, custom_objects=None, compile=True, safe_mode=True):  # noqa: A002 (Keras' name)
    """`keras.models.load_model`, with keras_kd's classes registered first.

    Use it for any `.keras` file keras_kd wrote or trained: a quantization-aware
    student (`quantize_model`'s result, saved by `model.save` or a
    `ModelCheckpoint`), a saved `Distiller`, a model whose loss is a keras_kd
    loss. `keras.models.load_model` works too once the defining modules are
    imported (`import keras_kd.quantization` for a QAT model); this saves
    knowing which.

    Args:
        filepath: path of the `.keras` file.
        custom_objects: the user's own classes, as for `keras.models.load_model`.
        compile: restore the training configuration (Keras' default, True).
        safe_mode: Keras' `safe_mode` (refuses lambda deserialization).

    Returns:
        The model, as `keras.models.load_model` returns it.

    Raises:
        FileNotFoundError: no file at `filepath`.

    Example:

    ```python
    import keras
    import numpy as np
    import keras_kd

    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    qat = keras_kd.quantize_model(student)
    qat.save("student_qat.keras")             # mid-run, or by a ModelCheckpoint
    restored = keras_kd.load_model("student_qat.keras")   # in a new script too
    keras_kd.to_tflite(restored, "student_int8.tflite", representative_data=np.ones((8, 4), "float32"))
    ```
    """
    import os

    from keras_kd.backend import keras

    path = os.fspath(filepath)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No saved model at {path!r}: pass the path of a .keras file.")
    register_serializables()
    return keras.models.load_model(path, custom_objects=custom_objects, compile=compile, safe_mode=safe_mode)
