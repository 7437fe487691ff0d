"""keras_kd: knowledge distillation for Keras, carried to a verified INT8 TFLite file.

The public surface is `__all__` (tests/test_public_api.py pins it). Names load
on first access, so `import keras_kd` is cheap and imports no optional package
(TensorFlow loads with the first name that needs it).

Example:

```python
import keras_kd
distiller = keras_kd.Distiller(teacher=teacher, student=student).compile(optimizer="adam")
```
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "augment",
    "backend",
    "benchmark",
    "callbacks",
    "data",
    "export",
    "interpreter",
    "losses",
    "quantization",
    "quickstart",
    "report",
    "schedules",
    "schemes",
)

# public name -> module that defines it
_NAMES = {
    "Distiller": "keras_kd.distiller",
    "cache_teacher_outputs": "keras_kd.cache",
    "TemperatureScheduler": "keras_kd.callbacks",
    "AlphaScheduler": "keras_kd.callbacks",
    "LossWeightScheduler": "keras_kd.callbacks",
    "load_dataset": "keras_kd.data",
    "compare_with_control": "keras_kd.control",
}

__all__ = ["__version__", *_SUBMODULES, *_NAMES]


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"keras_kd.{name}")
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'keras_kd' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
