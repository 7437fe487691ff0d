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

import dataclasses
import math
import os
import platform
import re
import shlex
import shutil
import subprocess
import time
from typing import Optional

import numpy as np

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

DEFAULT_DEVICE_DIR = "/data/local/tmp/keras_kd"

_BINARY_HINT = (
    "Download the official prebuilt binary for the phone's ABI (arm64-v8a phones: "
    "https://storage.googleapis.com/tensorflow-nightly-public/prod/tensorflow/release/lite/tools/nightly/latest/"
    "android_aarch64_benchmark_model ; 32-bit ARM: .../android_arm_benchmark_model) or build it with "
    "`bazel build -c opt --config=android_arm64 //tflite/tools/benchmark:benchmark_model` in "
    "google-ai-edge/LiteRT, then pass its local path as benchmark_binary=. See export/ANDROID.md."
)

_ADB_HINT = (
    "Install the Android SDK platform-tools (https://developer.android.com/tools/releases/platform-tools, "
    "or `sudo apt-get install adb` / `brew install android-platform-tools`) and put `adb` on PATH, "
    "or pass adb='/path/to/platform-tools/adb'."
)


class AndroidBenchmarkError(RuntimeError):
    """adb, the device or benchmark_model failed; the message says which and how to fix it."""


class BenchmarkOutputError(AndroidBenchmarkError, ValueError):
    """The output of benchmark_model could not be parsed; the message shows its tail."""


@dataclasses.dataclass
class BenchmarkResult:
    """Latency statistics of one model under one setting. Times are milliseconds.

    Attributes:
        name: the model's name (the file name for `.tflite`, `model.name` for Keras).
        backend: what ran it: "ai_edge_litert" / "tflite_runtime" (host interpreter),
            "keras" (host TensorFlow) or "benchmark_model" (on an Android device).
        init_ms: time to build the interpreter/model and allocate tensors (TFLite),
            or to trace the `tf.function` and run it once (Keras).
        mean_ms, std_ms, p50_ms, p90_ms, p99_ms, min_ms, max_ms: statistics of the
            counted runs. benchmark_model prints no p90/p99 and, before LiteRT, no
            median either; fields that were not measured are None.
        num_runs: counted runs (benchmark_model may run more than asked: it also
            honours its `--min_secs`, 1 s by default).
        warmup_runs: warm-up runs requested (never counted).
        num_threads: threads requested; None means the runtime's default.
        use_xnnpack: whether the XNNPACK delegate was allowed (None for Keras).
        file_size_bytes: size of the `.tflite` file; None for an in-memory model.
        host: description of the machine that ran the model.
        device: the Android device model (`ro.product.model`); None on the host.
        extra: format-specific figures (p5/p95, first inference, warm-up mean,
            memory footprint in MB, the flags passed, ...).
    """

    name: str
    backend: str
    init_ms: Optional[float]
    mean_ms: Optional[float]
    std_ms: Optional[float]
    p50_ms: Optional[float]
    p90_ms: Optional[float]
    p99_ms: Optional[float]
    min_ms: Optional[float]
    max_ms: Optional[float]
    num_runs: Optional[int]
    warmup_runs: int
    num_threads: Optional[int]
    use_xnnpack: Optional[bool]
    file_size_bytes: Optional[int]
    host: str
    device: Optional[str] = None
    extra: dict = dataclasses.field(default_factory=dict)

    @property
    def typical_ms(self):
        """The median when it was measured, else the mean (old benchmark_model prints no median)."""
        return self.p50_ms if self.p50_ms is not None else self.mean_ms

    def to_dict(self):
        """A JSON-serializable dict of every field (plus `typical_ms`)."""
        data = dataclasses.asdict(self)
        data["typical_ms"] = self.typical_ms
        return data


# ---------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------


def _check_counts(num_runs, warmup_runs, num_threads, allow_none_threads):
    if isinstance(num_runs, bool) or not isinstance(num_runs, (int, np.integer)) or num_runs < 1:
        raise ValueError(f"num_runs must be an integer >= 1, got {num_runs!r}. Pass e.g. num_runs=100.")
    if isinstance(warmup_runs, bool) or not isinstance(warmup_runs, (int, np.integer)) or warmup_runs < 0:
        raise ValueError(
            f"warmup_runs must be an integer >= 0, got {warmup_runs!r}. Pass e.g. warmup_runs=10 "
            "(warm-up runs are never counted)."
        )
    if num_threads is None and allow_none_threads:
        return
    if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)) or num_threads < 1:
        default = " or None for the runtime's default" if allow_none_threads else ""
        raise ValueError(f"num_threads must be an integer >= 1{default}, got {num_threads!r}.")


def _cpu_model_name():
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_description():
    """A one-line description of this machine: CPU model, logical CPUs, OS, Python.

    Example:

    >>> "CPUs" in host_description()
    True
    """
    return (
        f"{_cpu_model_name()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()} "
        f"({platform.machine()}), Python {platform.python_version()}"
    )


def _summarize_ms(samples_ns):
    samples = np.asarray(samples_ns, dtype=np.float64) / 1e6
    p50, p90, p99 = np.percentile(samples, [50, 90, 99])
    return {
        "mean_ms": float(samples.mean()),
        "std_ms": float(samples.std()),
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "min_ms": float(samples.min()),
        "max_ms": float(samples.max()),
        "num_runs": int(samples.size),
    }


def _random_array(shape, dtype, rng, quantization=(0.0, 0)):
    """Random data in a tensor's own dtype: full-range integers for int8/uint8, N(0, 1) for floats."""
    dtype = np.dtype(dtype)
    shape = tuple(int(d) for d in shape)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        scale = quantization[0] if quantization else 0.0
        if scale or dtype.itemsize == 1:
            low, high = int(info.min), int(info.max)  # the whole quantized range
        else:  # an unquantized integer input (ids, indices): keep it small and valid
            low, high = 0, min(int(info.max), 9)
        return rng.integers(low, high, size=shape, endpoint=True, dtype=np.int64).astype(dtype)
    raise ValueError(
        f"Cannot generate benchmark input of dtype {dtype}; only float, int and bool inputs are supported."
    )


# ---------------------------------------------------------------------------
# Host: TFLite
# ---------------------------------------------------------------------------


def benchmark_tflite(
    path,
    num_threads=1,
    warmup_runs=10,
    num_runs=100,
    use_xnnpack=True,
    seed=0,
    name=None,
):
    """Measures the latency of a `.tflite` file in the LiteRT interpreter on this machine.

    The interpreter is built once (`init_ms` is that time, tensor allocation
    included), the inputs are filled once with random data in each input's own
    dtype (full-range random integers for int8/uint8 inputs, standard normal
    values for float inputs), then `invoke()` alone is timed with
    `time.perf_counter_ns`: `warmup_runs` uncounted calls, then `num_runs`
    counted ones.

    Args:
        path: a `.tflite` file path, or the model's bytes.
        num_threads: interpreter threads (>= 1). One thread gives the most
            stable figure and matches a phone's single big core.
        warmup_runs: uncounted runs before measuring (>= 0).
        num_runs: counted runs (>= 1).
        use_xnnpack: False disables the default XNNPACK delegate (plain builtin kernels).
        seed: seed of the random inputs.
        name: label of the result; defaults to the file name.

    Returns:
        A `BenchmarkResult` with backend set to the interpreter package used.

    Raises:
        ValueError: an argument is out of range.
        FileNotFoundError: `path` does not exist.

    Example:

    ```python
    result = benchmark_tflite("student_int8.tflite", num_threads=1, num_runs=200)
    print(f"{result.p50_ms:.3f} ms (p99 {result.p99_ms:.3f} ms)")
    ```
    """
    from keras_kd.interpreter import interpreter_backend, load_interpreter

    _check_counts(num_runs, warmup_runs, num_threads, allow_none_threads=False)
    if isinstance(path, (bytes, bytearray)):
        file_size, label = len(path), name or "in-memory model"
    else:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No .tflite file at {path!r}. Pass the path that `to_tflite` returned.")
        file_size, label = os.path.getsize(path), name or os.path.basename(path)

    start = time.perf_counter_ns()
    interpreter = load_interpreter(path, num_threads=int(num_threads), use_xnnpack=use_xnnpack)
    init_ns = time.perf_counter_ns() - start

    rng = np.random.default_rng(seed)
    input_dtypes = []
    for detail in interpreter.get_input_details():
        data = _random_array(detail["shape"], detail["dtype"], rng, detail.get("quantization"))
        interpreter.set_tensor(detail["index"], data)
        input_dtypes.append(np.dtype(detail["dtype"]).name)

    for _ in range(int(warmup_runs)):
        interpreter.invoke()
    samples = np.empty(int(num_runs), dtype=np.int64)
    for i in range(int(num_runs)):
        start = time.perf_counter_ns()
        interpreter.invoke()
        samples[i] = time.perf_counter_ns() - start

    return BenchmarkResult(
        name=label,
        backend=interpreter_backend(),
        init_ms=init_ns / 1e6,
        **_summarize_ms(samples),
        warmup_runs=int(warmup_runs),
        num_threads=int(num_threads),
        use_xnnpack=bool(use_xnnpack),
        file_size_bytes=int(file_size),
        host=host_description(),
        extra={"input_dtypes": input_dtypes, "seed": seed, "timed": "interpreter.invoke()"},
    )


# ---------------------------------------------------------------------------
# Host: Keras
# ---------------------------------------------------------------------------


def _keras_input_specs(model, input_shape, batch_size):
    """[(shape with batch, dtype)] for each model input."""
    if input_shape is not None:
        shapes = input_shape if input_shape and isinstance(input_shape[0], (tuple, list)) else [input_shape]
        dtypes = ["float32"] * len(shapes)
        try:
            inputs = list(model.inputs)
            if len(inputs) == len(shapes):
                dtypes = [getattr(t.dtype, "name", t.dtype) for t in inputs]
        except (AttributeError, ValueError):
            pass
    else:
        try:
            inputs = list(model.inputs)
        except (AttributeError, ValueError):
            inputs = []
        if not inputs:
            raise ValueError(
                f"Model {getattr(model, 'name', model)!r} has no known input shape (it was never built or "
                "called). Pass input_shape=, the shape of one sample without the batch dimension, "
                "e.g. input_shape=(28, 28, 1)."
            )
        shapes = [tuple(t.shape)[1:] for t in inputs]
        dtypes = [getattr(t.dtype, "name", t.dtype) for t in inputs]
    specs = []
    for shape, dtype in zip(shapes, dtypes):
        shape = tuple(shape)
        if any(d is None for d in shape):
            raise ValueError(
                f"The model input has an unknown dimension {shape}; pass input_shape= with every dimension "
                "given (without the batch dimension)."
            )
        specs.append(((int(batch_size),) + tuple(int(d) for d in shape), str(dtype)))
    return specs


def benchmark_keras(
    model,
    input_shape=None,
    batch_size=1,
    num_threads=None,
    warmup_runs=10,
    num_runs=100,
    seed=0,
    name=None,
):
    """Measures the forward latency of a Keras model on this machine.

    What is timed: a `tf.function` wrapping `model(x, training=False)` (a
    compiled graph, the fair comparison with an interpreter), called on one
    random batch of `batch_size` (1 by default, as on a phone). `init_ms` is the
    first call: tracing plus one run. TensorFlow executes CPU ops
    synchronously, so the call returns when the output is computed.

    Args:
        model: a built Keras model.
        input_shape: the shape of one sample without the batch dimension (a list
            of shapes for several inputs); defaults to the model's inputs.
        batch_size: samples per call (>= 1).
        num_threads: TensorFlow intra-op threads. They can only be set before
            TensorFlow starts; None keeps (and records) the current setting. If
            a different count is asked after start-up a ValueError says how to
            set it.
        warmup_runs: uncounted calls after the first (>= 0).
        num_runs: counted calls (>= 1).
        seed: seed of the random inputs.
        name: label of the result; defaults to `model.name`.

    Returns:
        A `BenchmarkResult` with backend "keras" and no file size.

    Example:

    ```python
    result = benchmark_keras(teacher, num_runs=100)
    print(f"teacher: {result.p50_ms:.2f} ms at batch 1")
    ```
    """
    from keras_kd.backend import tf

    _check_counts(num_runs, warmup_runs, num_threads, allow_none_threads=True)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
    if not callable(model):
        raise TypeError(f"benchmark_keras expects a Keras model, got {type(model).__name__}.")

    current = tf.config.threading.get_intra_op_parallelism_threads()
    if num_threads is not None and int(num_threads) != current:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(num_threads))
        except RuntimeError as error:
            raise ValueError(
                f"num_threads={num_threads} cannot be applied: TensorFlow is already running with "
                f"{current or 'its default number of'} intra-op threads ({error}). Call "
                "tf.config.threading.set_intra_op_parallelism_threads(n) at the very start of the "
                "program, or pass num_threads=None to record the current setting."
            ) from error
        current = int(num_threads)

    rng = np.random.default_rng(seed)
    specs = _keras_input_specs(model, input_shape, batch_size)
    arrays = [tf.constant(_random_array(shape, dtype, rng)) for shape, dtype in specs]
    x = arrays[0] if len(arrays) == 1 else arrays

    forward = tf.function(lambda inputs: model(inputs, training=False))
    start = time.perf_counter_ns()
    forward(x)
    init_ns = time.perf_counter_ns() - start

    for _ in range(int(warmup_runs)):
        forward(x)
    samples = np.empty(int(num_runs), dtype=np.int64)
    for i in range(int(num_runs)):
        start = time.perf_counter_ns()
        forward(x)
        samples[i] = time.perf_counter_ns() - start

    return BenchmarkResult(
        name=name or getattr(model, "name", type(model).__name__),
        backend="keras",
        init_ms=init_ns / 1e6,
        **_summarize_ms(samples),
        warmup_runs=int(warmup_runs),
        num_threads=current or None,
        use_xnnpack=None,
        file_size_bytes=None,
        host=host_description(),
        extra={
            "batch_size": int(batch_size),
            "input_shapes": [list(shape) for shape, _ in specs],
            "seed": seed,
            "timed": "tf.function(model(x, training=False))",
            "tensorflow": tf.__version__,
        },
    )


# ---------------------------------------------------------------------------
# Parsing benchmark_model output
# ---------------------------------------------------------------------------

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"
_PAIR = re.compile(r"\b(count|first|curr|min|max|avg|std|p5|median|p95)=(" + _NUMBER + r")", re.IGNORECASE)
_RUN_HEADER = re.compile(r"Running benchmark for (?:at least )?(\d+) iterations?")
_TIMINGS = re.compile(r"(Average inference timings|Inference timings) in us:\s*(.*)")
_TIMING_ITEM = re.compile(r"([A-Za-z][A-Za-z ()]*?):\s*(" + _NUMBER + r")")
_INIT_SESSION = re.compile(r"Initialized session in\s*(" + _NUMBER + r")\s*ms")
_MODEL_SIZE = re.compile(r"The input model file size \(MB\):\s*(" + _NUMBER + r")")
_MEMORY_DELTA = re.compile(
    r"Memory footprint delta from the start of the tool \(MB\):\s*init=(" + _NUMBER + r")\s+overall=(" + _NUMBER + r")"
)
_PEAK_MEMORY = re.compile(
    r"(?<!Overall )Peak memory footprint \(MB\):\s*init=(" + _NUMBER + r")\s+overall=(" + _NUMBER + r")"
)
_OVERALL_PEAK = re.compile(r"Overall peak memory footprint \(MB\) via periodic monitoring:\s*(" + _NUMBER + r")")
# Per-operator profiling summaries print the same statistics after these labels; they are not run timings.
_PROFILER_STAT = re.compile(r"\((?:microseconds|bytes)\)\s*:\s*$")


def _stat_from_line(line):
    """The statistics of a `Stat::OutputToStream` line, in microseconds, or None."""
    pairs = {key.lower(): float(value) for key, value in _PAIR.findall(line)}
    if "count" not in pairs:
        return None
    stat = {"count": int(pairs["count"])}
    if stat["count"] == 0:
        return stat
    if "first" not in pairs and "curr" in pairs:
        # "count=N curr=V[(all same)]": every run took V microseconds.
        value = pairs["curr"]
        stat.update(first=value, curr=value, min=value, max=value, avg=value, std=0.0)
    else:
        for key in ("first", "curr", "min", "max", "avg", "std"):
            if key in pairs:
                stat[key] = pairs[key]
    for key in ("p5", "median", "p95"):
        if key in pairs:
            stat[key] = pairs[key]
    return stat


def _tail(text, lines=25):
    kept = text.strip().splitlines()[-lines:]
    return "\n".join("    " + line for line in kept) if kept else "    <empty output>"


def parse_benchmark_model_output(text):
    """Parses what the LiteRT/TFLite `benchmark_model` binary prints.

    Understood formats (line prefixes such as `INFO: ` or a logcat tag are ignored):

    * run statistics, one line after each "Running benchmark for [at least] N
      iterations" header, first for the warm-up then for the counted runs:
      `count=50 first=.. curr=.. min=.. max=.. avg=.. std=..` (TensorFlow Lite),
      the same followed by `p5=.. median=.. p95=..` (LiteRT), or
      `count=N curr=V` / `curr=V(all same)` when all runs took the same time;
    * the summary `Inference timings in us: Init: X, First inference: Y,
      Warmup (avg): Z, Inference (avg): W` (TensorFlow 2.x and LiteRT) or the
      older `Average inference timings in us: Warmup: Z, Init: X, no stats: W`
      (TensorFlow 1.x) / `..., Inference: W` (Android benchmark app);
    * `Initialized session in X ms.`, `The input model file size (MB): X`;
    * memory: `Memory footprint delta from the start of the tool (MB): init=..
      overall=..`, the older `Peak memory footprint (MB): init=.. overall=..`,
      and `Overall peak memory footprint (MB) via periodic monitoring: X`.

    Args:
        text: the combined stdout/stderr of one benchmark_model run.

    Returns:
        A dict: `warmup` and `inference` (dicts of count/first/curr/min/max/avg/
        std[/p5/median/p95] in microseconds, or None), `init_us`,
        `first_inference_us`, `warmup_avg_us`, `inference_avg_us`,
        `model_size_mb`, `format` (which summary was found) and `memory_mb`: a dict,
        possibly empty, with `delta_init`/`delta_overall` (footprint delta),
        `peak_init`/`peak_overall` (the older max-RSS "Peak memory footprint")
        and `peak_periodic` (periodic monitoring).

    Raises:
        BenchmarkOutputError: no inference timing could be found; the message
            shows the tail of the output.

    Example:

    >>> out = parse_benchmark_model_output(
    ...     "Running benchmark for at least 50 iterations and at least 1 seconds\\n"
    ...     "count=50 first=2143 curr=2101 min=2056 max=2656 avg=2177.1 std=124\\n")
    >>> out["inference"]["avg"]
    2177.1
    """
    if not isinstance(text, str):
        text = text.decode("utf-8", errors="replace")
    lines = text.splitlines()
    run_stats = []
    pending_header = False
    summary = {}
    result = {
        "warmup": None,
        "inference": None,
        "init_us": None,
        "first_inference_us": None,
        "warmup_avg_us": None,
        "inference_avg_us": None,
        "model_size_mb": None,
        "memory_mb": {},
        "format": None,
    }
    for raw in lines:
        line = raw.strip()
        if _RUN_HEADER.search(line):
            pending_header = True
            continue
        if pending_header and "count=" in line:
            stat = _stat_from_line(line)
            if stat is not None:
                run_stats.append(stat)
                pending_header = False
                continue
        match = _TIMINGS.search(line)
        if match:
            result["format"] = "legacy_average" if match.group(1).startswith("Average") else "timings"
            for key, value in _TIMING_ITEM.findall(match.group(2)):
                summary[key.strip().lower()] = float(value)
            continue
        match = _INIT_SESSION.search(line)
        if match:
            summary.setdefault("initialized session ms", float(match.group(1)))
            continue
        match = _MODEL_SIZE.search(line)
        if match:
            result["model_size_mb"] = float(match.group(1))
            continue
        match = _MEMORY_DELTA.search(line)
        if match:
            result["memory_mb"].update(delta_init=float(match.group(1)), delta_overall=float(match.group(2)))
            continue
        match = _OVERALL_PEAK.search(line)
        if match:
            result["memory_mb"]["peak_periodic"] = float(match.group(1))
            continue
        match = _PEAK_MEMORY.search(line)
        if match:
            result["memory_mb"].update(peak_init=float(match.group(1)), peak_overall=float(match.group(2)))
            continue

    if not run_stats:
        # Output without the run headers (for example a grep of it): take the lines that start with count=.
        for raw in lines:
            position = raw.find("count=")
            if position >= 0 and not _PROFILER_STAT.search(raw[:position]):
                stat = _stat_from_line(raw[position:])
                if stat is not None:
                    run_stats.append(stat)
    if len(run_stats) >= 2:
        result["warmup"], result["inference"] = run_stats[0], run_stats[1]
    elif len(run_stats) == 1:
        result["inference"] = run_stats[0]

    result["init_us"] = summary.get("init")
    if result["init_us"] is None and "initialized session ms" in summary:
        result["init_us"] = summary["initialized session ms"] * 1e3
    result["first_inference_us"] = summary.get("first inference")
    result["warmup_avg_us"] = summary.get("warmup (avg)", summary.get("warmup"))
    result["inference_avg_us"] = summary.get(
        "inference (avg)", summary.get("inference", summary.get("no stats"))
    )
    if result["warmup"] and result["warmup"].get("count"):
        result["first_inference_us"] = result["first_inference_us"] or result["warmup"].get("first")
        result["warmup_avg_us"] = result["warmup_avg_us"] or result["warmup"].get("avg")
    inference = result["inference"]
    if inference is not None and inference.get("count") and result["inference_avg_us"] is None:
        result["inference_avg_us"] = inference.get("avg")
    if result["format"] is None and run_stats:
        result["format"] = "stats_only"
    if result["inference_avg_us"] is None or (inference is not None and not inference.get("count")):
        raise BenchmarkOutputError(
            "Could not find the inference timings in the benchmark_model output (no 'count=.. avg=..' line "
            "after 'Running benchmark for ...' and no 'Inference timings in us:' summary). Did the run fail "
            "or was it cut short? Last lines of the output:\n" + _tail(text)
        )
    if inference is not None and "median" in inference:
        result["format"] = "litert_percentiles"
    return result


def _result_from_parsed(parsed, name, file_size, settings, device, host, extra):
    inference = parsed["inference"] or {}

    def ms(value):
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else value / 1e3

    extra = dict(extra)
    extra.update(
        output_format=parsed["format"],
        first_inference_ms=ms(parsed["first_inference_us"]),
        warmup_mean_ms=ms(parsed["warmup_avg_us"]),
        warmup_count=(parsed["warmup"] or {}).get("count"),
        p5_ms=ms(inference.get("p5")),
        p95_ms=ms(inference.get("p95")),
        memory_mb=parsed["memory_mb"],
        model_size_mb_reported=parsed["model_size_mb"],
    )
    return BenchmarkResult(
        name=name,
        backend="benchmark_model",
        init_ms=ms(parsed["init_us"]),
        mean_ms=ms(parsed["inference_avg_us"]),
        std_ms=ms(inference.get("std")),
        p50_ms=ms(inference.get("median")),
        p90_ms=None,
        p99_ms=None,
        min_ms=ms(inference.get("min")),
        max_ms=ms(inference.get("max")),
        num_runs=inference.get("count"),
        warmup_runs=settings["warmup_runs"],
        num_threads=settings["num_threads"],
        use_xnnpack=settings["use_xnnpack"],
        file_size_bytes=file_size,
        host=host,
        device=device,
        extra=extra,
    )


# ---------------------------------------------------------------------------
# Android over adb
# ---------------------------------------------------------------------------


def _resolve_adb(adb):
    adb = os.fspath(adb)
    if os.path.dirname(adb):
        if os.path.isfile(adb) and os.access(adb, os.X_OK):
            return os.path.abspath(adb)
        raise FileNotFoundError(f"adb={adb!r} is not an executable file. {_ADB_HINT}")
    found = shutil.which(adb)
    if found is None:
        raise FileNotFoundError(f"Could not find {adb!r} on PATH. {_ADB_HINT}")
    return found


class _Adb:
    """Runs adb commands against one device and keeps their output for error messages."""

    def __init__(self, executable, timeout):
        self.executable = executable
        self.timeout = timeout
        self.serial = None

    def run(self, *args, check=True, timeout=None):
        command = [self.executable]
        if self.serial is not None:
            command += ["-s", self.serial]
        command += [str(a) for a in args]
        try:
            completed = subprocess.run(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=timeout or self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            output = (error.output or b"").decode("utf-8", errors="replace")
            raise AndroidBenchmarkError(
                f"`{shlex.join(command)}` did not finish within {timeout or self.timeout} s. Raise timeout= or "
                f"lower num_runs=. Output so far:\n{_tail(output)}"
            ) from None
        output = completed.stdout.decode("utf-8", errors="replace")
        if check and completed.returncode != 0:
            raise AndroidBenchmarkError(
                f"`{shlex.join(command)}` failed with exit status {completed.returncode}. Output:\n{_tail(output)}"
            )
        return completed.returncode, output

    def shell(self, command, check=True, timeout=None):
        return self.run("shell", command, check=check, timeout=timeout)


def _parse_adb_devices(output):
    devices = []
    for line in output.splitlines():
        line = line.strip()
        if not line or line.startswith(("List of devices", "*", "adb server", "daemon")):
            continue
        parts = line.split(None, 1)
        if len(parts) == 2:
            state = parts[1].split(" usb:")[0].split(" product:")[0].strip()
            devices.append((parts[0], state))
    return devices


_STATE_HINTS = {
    "unauthorized": "unlock the phone and accept the 'Allow USB debugging?' prompt (then run `adb devices` again)",
    "offline": "reconnect the cable or run `adb kill-server && adb start-server`",
    "no permissions": "fix the udev rules (Linux: add your user to the plugdev group) and reconnect",
}


def _state_hint(state):
    for key, hint in _STATE_HINTS.items():
        if state.startswith(key):
            return hint
    return "wait until it is fully booted and shows as 'device' in `adb devices`"


def _select_device(devices, serial):
    listing = ", ".join(f"{s} ({state})" for s, state in devices) or "none"
    if serial is not None:
        for candidate, state in devices:
            if candidate == serial:
                if state != "device":
                    raise AndroidBenchmarkError(f"Device {serial!r} is {state!r}: {_state_hint(state)}.")
                return serial
        raise AndroidBenchmarkError(f"No device with serial {serial!r} is attached. `adb devices` lists: {listing}.")
    ready = [s for s, state in devices if state == "device"]
    if len(ready) == 1:
        return ready[0]
    if len(ready) > 1:
        raise AndroidBenchmarkError(
            f"Several devices are attached ({listing}); pass serial= with one of: {', '.join(ready)}."
        )
    if devices:
        details = "; ".join(f"{s} is {state!r}: {_state_hint(state)}" for s, state in devices)
        raise AndroidBenchmarkError(f"No usable Android device: {details}.")
    raise AndroidBenchmarkError(
        "No Android device is attached (`adb devices` lists none). Connect a phone with USB debugging enabled "
        "(Settings > About phone > tap 'Build number' 7 times, then Developer options > USB debugging) "
        "or start an emulator, and check that `adb devices` shows it as 'device'."
    )


def _check_cpu_mask(cpu_mask):
    if cpu_mask is None:
        return None
    if isinstance(cpu_mask, (int, np.integer)) and not isinstance(cpu_mask, bool) and cpu_mask > 0:
        return format(int(cpu_mask), "x")
    if isinstance(cpu_mask, str) and re.fullmatch(r"(0x)?[0-9a-fA-F]+", cpu_mask) and int(cpu_mask, 16) > 0:
        return cpu_mask[2:] if cpu_mask.lower().startswith("0x") else cpu_mask
    raise ValueError(
        f"cpu_mask must be a positive hexadecimal affinity mask for `taskset` (e.g. 'f0' for CPUs 4-7, "
        f"or the int 0xf0), got {cpu_mask!r}."
    )


def benchmark_android(
    path,
    benchmark_binary,
    adb="adb",
    serial=None,
    num_threads=4,
    use_gpu=False,
    use_nnapi=False,
    use_xnnpack=True,
    warmup_runs=10,
    num_runs=100,
    cpu_mask=None,
    device_dir=DEFAULT_DEVICE_DIR,
    timeout=600,
    extra_flags=(),
    name=None,
):
    """Measures a `.tflite` file on an Android device with the official `benchmark_model` binary.

    Steps: find `adb`; pick the device (`adb devices`); read its model name
    (`getprop ro.product.model`); push the model and the binary to
    `device_dir`; `chmod +x` the binary; run

        [taskset <cpu_mask>] benchmark_model --graph=<model> --num_threads=N
            --use_gpu=.. --use_nnapi=.. --use_xnnpack=.. --warmup_runs=.. --num_runs=..

    parse its output (`parse_benchmark_model_output`) and remove the pushed
    files, whether the run succeeded or not.

    benchmark_model also runs for at least `--min_secs` (1 s by default), so
    `num_runs` of the result may be larger than asked; pass
    `extra_flags=["--min_secs=0"]` for exact counts. It prints no p90/p99, and
    only LiteRT builds print a median: those fields of the result are None when
    absent (`typical_ms` falls back to the mean).

    Args:
        path: the `.tflite` file on this machine.
        benchmark_binary: the local path of the benchmark_model binary for the
            phone's ABI (see export/ANDROID.md for where to get it).
        adb: the adb executable name or path.
        serial: the device serial; required when several devices are attached
            (defaults to $ANDROID_SERIAL when set).
        num_threads: CPU threads (>= 1).
        use_gpu, use_nnapi, use_xnnpack: delegates to request.
        warmup_runs: warm-up runs (>= 0, never counted).
        num_runs: counted runs (>= 1).
        cpu_mask: hexadecimal CPU affinity mask for `taskset` (e.g. "f0" for
            the big cores of many phones); None runs without pinning.
        device_dir: where the files go on the device.
        timeout: seconds allowed for each adb command.
        extra_flags: more benchmark_model flags, e.g. ["--min_secs=0"].
        name: label of the result; defaults to the file name.

    Returns:
        A `BenchmarkResult` with backend "benchmark_model" and `device` set.

    Raises:
        FileNotFoundError: adb, the model or the binary is missing.
        ValueError: an argument is out of range.
        AndroidBenchmarkError: no usable device, several devices without a
            serial, an adb command failed, or benchmark_model failed.
        BenchmarkOutputError: the output could not be parsed (its tail is shown).

    Example:

    ```python
    result = benchmark_android(
        "student_int8.tflite", "android_aarch64_benchmark_model",
        num_threads=1, cpu_mask="f0", num_runs=200)
    print(result.device, result.typical_ms)
    ```
    """
    _check_counts(num_runs, warmup_runs, num_threads, allow_none_threads=False)
    mask = _check_cpu_mask(cpu_mask)
    if isinstance(extra_flags, str):
        raise TypeError(f"extra_flags must be a list of flags, got the string {extra_flags!r}; wrap it in a list.")
    for flag in extra_flags:
        if not str(flag).startswith("--"):
            raise ValueError(f"Each extra flag must look like '--name=value', got {flag!r}.")
    model_path = os.fspath(path)
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"No .tflite file at {model_path!r}. Pass the path that `to_tflite` returned.")
    binary_path = os.fspath(benchmark_binary) if benchmark_binary is not None else None
    if not binary_path or not os.path.isfile(binary_path):
        raise FileNotFoundError(f"The benchmark_model binary {binary_path!r} does not exist. {_BINARY_HINT}")
    device_dir = str(device_dir).rstrip("/") or "/"
    if not device_dir.startswith("/") or device_dir == "/":
        raise ValueError(f"device_dir must be an absolute directory on the device other than '/', got {device_dir!r}.")

    adb_runner = _Adb(_resolve_adb(adb), timeout)
    if serial is None:
        serial = os.environ.get("ANDROID_SERIAL") or None
    _, listing = adb_runner.run("devices")
    adb_runner.serial = _select_device(_parse_adb_devices(listing), serial)

    _, device_model = adb_runner.shell("getprop ro.product.model", check=False)
    _, abi = adb_runner.shell("getprop ro.product.cpu.abi", check=False)
    device = device_model.strip() or adb_runner.serial

    remote_model = f"{device_dir}/{os.path.basename(model_path)}"
    remote_binary = f"{device_dir}/benchmark_model"
    flags = [
        f"--graph={remote_model}",
        f"--num_threads={int(num_threads)}",
        f"--use_gpu={str(bool(use_gpu)).lower()}",
        f"--use_nnapi={str(bool(use_nnapi)).lower()}",
        f"--use_xnnpack={str(bool(use_xnnpack)).lower()}",
        f"--warmup_runs={int(warmup_runs)}",
        f"--num_runs={int(num_runs)}",
        *[str(f) for f in extra_flags],
    ]
    command = ([f"taskset {mask}"] if mask else []) + [shlex.quote(remote_binary)] + [shlex.quote(f) for f in flags]
    pushed = []
    try:
        adb_runner.shell(f"mkdir -p {shlex.quote(device_dir)}")
        pushed.append(remote_model)
        adb_runner.run("push", model_path, remote_model)
        pushed.append(remote_binary)
        adb_runner.run("push", binary_path, remote_binary)
        adb_runner.shell(f"chmod +x {shlex.quote(remote_binary)}")
        status, output = adb_runner.shell(" ".join(command), check=False)
        try:
            parsed = parse_benchmark_model_output(output)
        except BenchmarkOutputError as error:
            raise BenchmarkOutputError(
                f"benchmark_model on {device} (exit status {status}) gave no usable timings: {error}"
            ) from None
        if status != 0:
            raise AndroidBenchmarkError(
                f"benchmark_model on {device} exited with status {status}. Output:\n{_tail(output)}"
            )
    finally:
        if pushed:
            adb_runner.shell("rm -f " + " ".join(shlex.quote(p) for p in pushed), check=False)
            adb_runner.shell(f"rmdir {shlex.quote(device_dir)}", check=False)

    settings = {"warmup_runs": int(warmup_runs), "num_threads": int(num_threads), "use_xnnpack": bool(use_xnnpack)}
    extra = {
        "serial": adb_runner.serial,
        "abi": abi.strip() or None,
        "use_gpu": bool(use_gpu),
        "use_nnapi": bool(use_nnapi),
        "cpu_mask": mask,
        "num_runs_requested": int(num_runs),
        "command": " ".join(command),
    }
    return _result_from_parsed(
        parsed,
        name=name or os.path.basename(model_path),
        file_size=os.path.getsize(model_path),
        settings=settings,
        device=device,
        host=f"Android device {device} via adb (serial {adb_runner.serial})",
        extra=extra,
    )
