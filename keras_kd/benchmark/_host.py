"""Timing on this machine: a `.tflite` file in the LiteRT interpreter, a Keras model through `tf.function`."""

import os
import platform
import time

import numpy as np

from keras_kd.benchmark._result import BenchmarkResult, check_counts


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

    check_counts(num_runs, warmup_runs, num_threads, allow_none_threads=False)
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

    check_counts(num_runs, warmup_runs, num_threads, allow_none_threads=True)
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
