"""keras_kd: knowledge distillation for Keras, carried to a verified INT8 TFLite file.

The public surface is `__all__`: what a user calls, and the public submodules a
user imports (tests/test_public_api.py pins it and each module's `__all__`).
Plumbing (`keras_kd.backend`, `keras_kd.interpreter`, `keras_kd.files`,
`keras_kd.report`, ...) stays importable and out of `__all__`. Names load on
first access, so `import keras_kd` is cheap and imports no optional package
(TensorFlow loads with the first name that needs it).

Package map (one line per module; tests/test_public_api.py checks it against the files):

    __init__.py          the public surface, loaded lazily
    _compat.py           keras.distillation spellings: values and losses kept as the user gave them
    _validate.py         the one validator of each hyperparameter (temperature, alpha, loss weights)
    augment.py           public: one augmented (MixUp/CutMix-mixed) view per batch for teacher and student
    backend.py           plumbing: the one place that picks Keras 3 or tf_keras
    benchmark/           public: latency on the host and on an Android phone, one BenchmarkResult
      _adb.py            driving adb: finding it, running commands, choosing the device
      _android.py        benchmark_android: LiteRT's benchmark_model on a phone
      _host.py           benchmark_tflite and benchmark_keras on this machine
      _parse.py          parsing every output format of benchmark_model
      _result.py         BenchmarkResult and the Android errors
    cache.py             cache_teacher_outputs: run the teacher once, train on its stored outputs
    callbacks.py         public: schedulers of temperature, alpha and loss weights; TFLiteEvalCallback
    cli.py               plumbing: the keras-kd command
    control.py           compare_with_control: the distilled student against its label-only control
    data.py              public: load_dataset and the offline datasets
    distiller.py         Distiller: the keras.Model that trains a student from a frozen teacher
    export/              public: to_tflite, inspect_tflite, evaluate_tflite, validate
      _calibration.py    input specs and calibration data checked against them
      _compact.py        the flatbuffer repacked with each repeated array stored once
      _convert.py        to_tflite, one named step after another
      _evaluate.py       running a .tflite on data and comparing it with its Keras model
      _inspect.py        reading a .tflite flatbuffer without running it
      _reports.py        what the export functions return
    files.py             plumbing: atomic writes and writable-folder checks
    interpreter.py       plumbing: loading a .tflite into LiteRT, quantizing inputs and outputs
    losses/              public: the distillation losses and their registry
      _base.py           the loss contract and the registry
      _compat.py         keras.distillation and keras.io example losses in a keras_kd Distiller
      _feature.py        feature losses between intermediate layers (FitNets, attention transfer, ...)
      _gradient.py       input-gradient matching
      _information.py    CRD and VID
      _multi_teacher.py  multi-teacher KL over stacked teachers
      _regression.py     distillation of real-valued outputs
      _relation.py       relation losses (RKD, PKT, SP)
      _response.py       losses on the final outputs (soft-target KL, DKD, ...)
      _sequence.py       token-level KL with padding masks
    quantization/        public: quantize_model, the QAT layers and the quantization registry
      activations.py     how TFLite runs each activation in int8
      compare.py         compare_layers: where an INT8 file drifts from its QAT model
      folding.py         BatchNormalization folding as the converter does it
      graph.py           reading and rebuilding Sequential/Functional graphs
      layers.py          layers that simulate int8 inference during training
      quantize.py        quantize_model
      quantizers.py      fake-quantization numerics
      registry.py        one quantization rule per layer type
      rewrites.py        float-to-float graph rewrites before quantizers are placed
    quickstart.py        plumbing: the keras-kd quickstart pipeline and its model builders
    report.py            plumbing: the run report (Markdown, JSON, plots)
    saving.py            load_model: a saved .keras file with keras_kd's classes registered first
    schedules.py         public: Linear, Cosine, Step, ... schedules for the schedulers
    schemes.py           public: distill (the one function entry point), born-again, TA chains, mutual learning
    teacher.py           plumbing: TeacherRunner runs the frozen teacher (taps, reduced precision) for Distiller and cache

Example:

```python
import keras_kd
distiller = keras_kd.Distiller(teacher=teacher, student=student).compile(optimizer="adam")
```
"""

import importlib

__version__ = "0.1.0"

# The submodules a user imports.
_PUBLIC_SUBMODULES = (
    "augment",
    "benchmark",
    "callbacks",
    "data",
    "export",
    "losses",
    "quantization",
    "schedules",
    "schemes",
)

# Importable as attributes too (`keras_kd.backend`), but plumbing: not in __all__.
_PLUMBING_SUBMODULES = (
    "backend",
    "cache",
    "cli",
    "control",
    "distiller",
    "files",
    "interpreter",
    "quickstart",
    "report",
    "saving",
    "teacher",
)

# public name -> module that defines it
_NAMES = {
    "Distiller": "keras_kd.distiller",
    "distill": "keras_kd.schemes",
    "cache_teacher_outputs": "keras_kd.cache",
    "TemperatureScheduler": "keras_kd.callbacks",
    "AlphaScheduler": "keras_kd.callbacks",
    "LossWeightScheduler": "keras_kd.callbacks",
    "load_dataset": "keras_kd.data",
    "compare_with_control": "keras_kd.control",
    "quantize_model": "keras_kd.quantization",
    "to_tflite": "keras_kd.export",
    "load_model": "keras_kd.saving",
}

__all__ = ["__version__", *_PUBLIC_SUBMODULES, *_NAMES]


def __getattr__(name):
    if name in _PUBLIC_SUBMODULES or name in _PLUMBING_SUBMODULES:
        return importlib.import_module(f"keras_kd.{name}")
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'keras_kd' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
