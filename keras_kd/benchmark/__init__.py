"""Latency of a model, measured the same way on the host and on an Android phone.

Three entry points return the same `BenchmarkResult`, so a float Keras model,
its float `.tflite` and its INT8 `.tflite` land in one table:

* `benchmark_tflite` runs a `.tflite` file in the LiteRT interpreter on this
  machine (`keras_kd.interpreter.load_interpreter`) and times `invoke()`.
* `benchmark_keras` times a Keras model's forward pass at batch 1 on this
  machine, through a `tf.function` that calls `model(x, training=False)`.
* `benchmark_android` pushes the `.tflite` file and the official LiteRT/TFLite
  `benchmark_model` binary to a phone with `adb`, runs it there and parses what
  it prints (`parse_benchmark_model_output`). Every version of that output
  format seen in TensorFlow Lite and LiteRT releases is understood; see the
  function's docstring.

Warm-up runs are never counted in the statistics. Latencies are milliseconds.
"""

from keras_kd.benchmark._android import DEFAULT_DEVICE_DIR, benchmark_android  # noqa: F401 - the constant is plumbing
from keras_kd.benchmark._host import benchmark_keras, benchmark_tflite, host_description
from keras_kd.benchmark._parse import parse_benchmark_model_output
from keras_kd.benchmark._result import AndroidBenchmarkError, BenchmarkOutputError, BenchmarkResult

__all__ = [
    "BenchmarkResult",
    "AndroidBenchmarkError",
    "BenchmarkOutputError",
    "benchmark_tflite",
    "benchmark_keras",
    "benchmark_android",
    "parse_benchmark_model_output",
    "host_description",
]
