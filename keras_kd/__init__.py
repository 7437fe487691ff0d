"""keras_kd: knowledge distillation for Keras, carried to a verified INT8 TFLite file.

The public surface is `__all__`. Heavy submodules (quantization, export,
benchmark, cli) load on first attribute access so `import keras_kd` stays
cheap and does not import optional packages.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "backend",
    "benchmark",
    "callbacks",
    "data",
    "export",
    "interpreter",
    "losses",
    "quantization",
    "schedules",
)

__all__ = [
    "__version__",
    *_SUBMODULES,
]


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"keras_kd.{name}")
    raise AttributeError(f"module 'keras_kd' has no attribute {name!r}")
