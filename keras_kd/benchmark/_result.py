"""What every benchmark returns (`BenchmarkResult`), the errors of the Android run, and checks they share."""

import dataclasses
from typing import Optional

import numpy as np


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


def check_counts(num_runs, warmup_runs, num_threads, allow_none_threads):
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


def output_tail(text, lines=25):
    kept = text.strip().splitlines()[-lines:]
    return "\n".join("    " + line for line in kept) if kept else "    <empty output>"
