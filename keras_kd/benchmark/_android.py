"""`benchmark_android`: a `.tflite` file timed on a phone by the official `benchmark_model`, over adb."""

import contextlib
import math
import os
import re
import shlex

import numpy as np

from keras_kd.benchmark import _adb
from keras_kd.benchmark._parse import parse_benchmark_model_output
from keras_kd.benchmark._result import (
    AndroidBenchmarkError,
    BenchmarkOutputError,
    BenchmarkResult,
    check_counts,
    output_tail,
)

DEFAULT_DEVICE_DIR = "/data/local/tmp/keras_kd"

_BINARY_HINT = (
    "Download the official prebuilt binary for the phone's ABI (arm64-v8a phones: "
    "https://storage.googleapis.com/tensorflow-nightly-public/prod/tensorflow/release/lite/tools/nightly/latest/"
    "android_aarch64_benchmark_model ; 32-bit ARM: .../android_arm_benchmark_model) or build it with "
    "`bazel build -c opt --config=android_arm64 //tflite/tools/benchmark:benchmark_model` in "
    "google-ai-edge/LiteRT, then pass its local path as benchmark_binary=. See export/ANDROID.md."
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
    check_counts(num_runs, warmup_runs, num_threads, allow_none_threads=False)
    mask = _check_cpu_mask(cpu_mask)
    _check_extra_flags(extra_flags)
    model_path, binary_path = _check_local_files(path, benchmark_binary)
    device_dir = _check_device_dir(device_dir)

    adb_runner = _adb.connect(adb, timeout, serial)
    device, abi = _describe_device(adb_runner)
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
    with _pushed(adb_runner, device_dir, [(model_path, remote_model), (binary_path, remote_binary)]):
        adb_runner.shell(f"chmod +x {shlex.quote(remote_binary)}")
        parsed = _run_benchmark_model(adb_runner, " ".join(command), device)

    settings = {"warmup_runs": int(warmup_runs), "num_threads": int(num_threads), "use_xnnpack": bool(use_xnnpack)}
    extra = {
        "serial": adb_runner.serial,
        "abi": abi,
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


def _check_extra_flags(extra_flags):
    if isinstance(extra_flags, str):
        raise TypeError(f"extra_flags must be a list of flags, got the string {extra_flags!r}; wrap it in a list.")
    for flag in extra_flags:
        if not str(flag).startswith("--"):
            raise ValueError(f"Each extra flag must look like '--name=value', got {flag!r}.")


def _check_local_files(path, benchmark_binary):
    """The paths of the model and of the benchmark_model binary on this machine, both checked to exist."""
    model_path = os.fspath(path)
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"No .tflite file at {model_path!r}. Pass the path that `to_tflite` returned.")
    binary_path = os.fspath(benchmark_binary) if benchmark_binary is not None else None
    if not binary_path or not os.path.isfile(binary_path):
        raise FileNotFoundError(f"The benchmark_model binary {binary_path!r} does not exist. {_BINARY_HINT}")
    return model_path, binary_path


def _check_device_dir(device_dir):
    device_dir = str(device_dir).rstrip("/") or "/"
    if not device_dir.startswith("/") or device_dir == "/":
        raise ValueError(f"device_dir must be an absolute directory on the device other than '/', got {device_dir!r}.")
    return device_dir


def _describe_device(adb_runner):
    """(the device's model name, else its serial; its ABI or None)."""
    _, device_model = adb_runner.shell("getprop ro.product.model", check=False)
    _, abi = adb_runner.shell("getprop ro.product.cpu.abi", check=False)
    return device_model.strip() or adb_runner.serial, abi.strip() or None


@contextlib.contextmanager
def _pushed(adb_runner, device_dir, files):
    """Pushes `(local, remote)` files into `device_dir`; removes them and the folder afterwards, whatever happens."""
    pushed = []
    try:
        adb_runner.shell(f"mkdir -p {shlex.quote(device_dir)}")
        for local, remote in files:
            pushed.append(remote)
            adb_runner.run("push", local, remote)
        yield
    finally:
        if pushed:
            adb_runner.shell("rm -f " + " ".join(shlex.quote(p) for p in pushed), check=False)
            adb_runner.shell(f"rmdir {shlex.quote(device_dir)}", check=False)


def _run_benchmark_model(adb_runner, command, device):
    """Runs `command` on the device; returns its parsed output, or raises naming the device and the exit status."""
    status, output = adb_runner.shell(command, check=False)
    try:
        parsed = parse_benchmark_model_output(output)
    except BenchmarkOutputError as error:
        raise BenchmarkOutputError(
            f"benchmark_model on {device} (exit status {status}) gave no usable timings: {error}"
        ) from None
    if status != 0:
        raise AndroidBenchmarkError(
            f"benchmark_model on {device} exited with status {status}. Output:\n{output_tail(output)}"
        )
    return parsed


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
