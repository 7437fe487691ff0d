"""Tests of keras_kd.benchmark: host timing, benchmark_model parsing, Android over a fake adb."""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from keras_kd.backend import keras, tf
from keras_kd.benchmark import _host
from keras_kd.benchmark import (
    AndroidBenchmarkError,
    BenchmarkOutputError,
    BenchmarkResult,
    benchmark_android,
    benchmark_keras,
    benchmark_tflite,
    parse_benchmark_model_output,
)

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
OUTPUTS = os.path.join(FIXTURES, "benchmark_model")
FAKE_ADB = os.path.join(FIXTURES, "fake_adb.py")
SCRIPT = os.path.join(os.path.dirname(__file__), os.pardir, "export", "android_benchmark.sh")
DEVICE_DIR = "/data/local/tmp/keras_kd"


def _output(name):
    with open(os.path.join(OUTPUTS, name), encoding="utf-8") as handle:
        return handle.read()


def _tiny_model():
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(4)(hidden), name="tiny")


# ---------------------------------------------------------------------------
# Host
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tflite_files(tmp_path_factory):
    """A tiny float .tflite and its full-INT8 version, converted once for the module."""
    keras.utils.set_random_seed(0)
    model = _tiny_model()
    folder = tmp_path_factory.mktemp("tflite")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    float_path = folder / "tiny_float.tflite"
    float_path.write_bytes(converter.convert())

    def representative():
        rng = np.random.default_rng(0)
        for _ in range(8):
            yield [rng.standard_normal((1, 8)).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    int8_path = folder / "tiny_int8.tflite"
    with warnings.catch_warnings():  # the converter warns about input statistics it does not need here
        warnings.simplefilter("ignore", UserWarning)
        int8_path.write_bytes(converter.convert())
    return {"float": str(float_path), "int8": str(int8_path)}


def _check_statistics(result, num_runs):
    assert isinstance(result, BenchmarkResult)
    assert result.num_runs == num_runs
    assert 0 < result.min_ms <= result.p50_ms <= result.p90_ms <= result.p99_ms <= result.max_ms
    assert result.min_ms <= result.mean_ms <= result.max_ms
    assert result.std_ms >= 0
    assert result.init_ms > 0
    assert "CPUs" in result.host
    json.dumps(result.to_dict())  # serializable as is


@pytest.mark.slow
def test_benchmark_tflite_float_structure_and_settings(tflite_files):
    result = benchmark_tflite(tflite_files["float"], num_threads=1, warmup_runs=3, num_runs=20)
    _check_statistics(result, 20)
    assert result.name == "tiny_float.tflite"
    assert result.backend in ("ai_edge_litert", "tflite_runtime")
    assert result.file_size_bytes == os.path.getsize(tflite_files["float"])
    assert (result.num_threads, result.use_xnnpack, result.warmup_runs) == (1, True, 3)
    assert result.extra["input_dtypes"] == ["float32"]
    data = result.to_dict()
    for key in ("init_ms", "mean_ms", "std_ms", "p50_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "num_runs",
                "file_size_bytes", "num_threads", "use_xnnpack", "warmup_runs", "backend", "host"):
        assert key in data
    assert data["typical_ms"] == result.p50_ms


@pytest.mark.slow
def test_benchmark_tflite_int8_inputs_use_the_quantized_range(tflite_files, monkeypatch):
    from keras_kd import interpreter as interpreter_module

    seen = {}
    real_load = interpreter_module.load_interpreter

    class CountingInterpreter:
        """Counts invoke() calls and keeps the input actually set, to check warm-up and input generation."""

        def __init__(self, inner):
            self.inner, self.invokes = inner, 0

        def invoke(self):
            self.invokes += 1
            return self.inner.invoke()

        def set_tensor(self, index, value):
            seen["input"] = np.array(value)
            return self.inner.set_tensor(index, value)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    def counting_load(*args, **kwargs):
        seen["interpreter"] = CountingInterpreter(real_load(*args, **kwargs))
        seen["kwargs"] = kwargs
        return seen["interpreter"]

    monkeypatch.setattr(interpreter_module, "load_interpreter", counting_load)
    result = benchmark_tflite(tflite_files["int8"], num_threads=2, warmup_runs=4, num_runs=7, use_xnnpack=False)
    _check_statistics(result, 7)
    assert seen["interpreter"].invokes == 4 + 7  # warm-up runs happen but are not in the statistics
    assert seen["kwargs"] == {"num_threads": 2, "use_xnnpack": False}
    assert result.extra["input_dtypes"] == ["int8"]
    assert seen["input"].dtype == np.int8
    assert seen["input"].min() < -64 and seen["input"].max() > 64  # spread over the int8 range
    assert result.use_xnnpack is False


def test_random_inputs_follow_the_dtype():
    rng = np.random.default_rng(0)
    int8 = _host._random_array((4000,), np.int8, rng, (0.1, -3))
    assert int8.dtype == np.int8 and int8.min() == -128 and int8.max() == 127
    uint8 = _host._random_array((4000,), np.uint8, rng, (0.02, 128))
    assert uint8.dtype == np.uint8 and uint8.min() == 0 and uint8.max() == 255
    floats = _host._random_array((4000,), np.float32, rng)
    assert floats.dtype == np.float32 and abs(floats.mean()) < 0.1 and 0.9 < floats.std() < 1.1
    ids = _host._random_array((100,), np.int32, rng)
    assert ids.min() >= 0 and ids.max() <= 9  # unquantized integer inputs stay small


def test_benchmark_keras_structure():
    model = _tiny_model()
    result = benchmark_keras(model, warmup_runs=2, num_runs=15)
    _check_statistics(result, 15)
    assert result.backend == "keras"
    assert result.name == "tiny"
    assert result.file_size_bytes is None and result.use_xnnpack is None
    assert result.extra["input_shapes"] == [[1, 8]]
    assert result.num_threads == (tf.config.threading.get_intra_op_parallelism_threads() or None)


def test_benchmark_keras_needs_a_shape_for_an_unbuilt_subclassed_model():
    class Unbuilt(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, inputs):
            return self.dense(inputs)

    with pytest.raises(ValueError, match="input_shape="):
        benchmark_keras(Unbuilt(), num_runs=2)
    result = benchmark_keras(Unbuilt(), input_shape=(5,), batch_size=2, warmup_runs=0, num_runs=3)
    assert result.num_runs == 3 and result.extra["input_shapes"] == [[2, 5]]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_runs": 0}, "num_runs must be an integer >= 1"),
        ({"num_runs": 2.5}, "num_runs must be an integer >= 1"),
        ({"warmup_runs": -1}, "warmup_runs must be an integer >= 0"),
        ({"num_threads": 0}, "num_threads must be an integer >= 1"),
    ],
)
def test_benchmark_arguments_are_validated(tmp_path, kwargs, message):
    path = tmp_path / "never_loaded.tflite"
    path.write_bytes(b"not read: validation comes first")
    with pytest.raises(ValueError, match=message):
        benchmark_tflite(path, **kwargs)
    with pytest.raises(ValueError, match=message):
        benchmark_keras(_tiny_model(), **kwargs)
    with pytest.raises(ValueError, match=message):
        benchmark_android(path, path, **kwargs)


def test_benchmark_tflite_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="No .tflite file"):
        benchmark_tflite(tmp_path / "missing.tflite")


# ---------------------------------------------------------------------------
# Parsing benchmark_model output
# ---------------------------------------------------------------------------

# file: (format, inference count/avg/std/min/max, median or None, init_us, warm-up count, first inference, memory)
PARSE_CASES = {
    "tflite_1x_average.txt": ("legacy_average", 100, 217.71, 9, 205, 265, None, 896, 10, 1231, {}),
    "tflite_2_3_peak_memory.txt": (
        "timings", 3741, 264.02, 21, 236, 911, None, 3412, 1862, 412,
        {"peak_init": 2.53516, "peak_overall": 3.17578},
    ),
    "tflite_2_x_memory_delta.txt": (
        "timings", 100, 2.95034e06, 109798, 2727568, 3189954, None, 17187, 1, 3512391,
        {"delta_init": 4.21094, "delta_overall": 46.0859},
    ),
    "tflite_2_x_info_gpu_peak.txt": (
        "timings", 1064, 940.23, 88, 699, 1873, None, 312584, 512, 6123,
        {"delta_init": 38.5742, "delta_overall": 41.2031, "peak_periodic": 96.1875},
    ),
    "litert_percentiles.txt": (
        "litert_percentiles", 4987, 199.85, 15, 180, 733, 197, 2118, 2471, 318,
        {"delta_init": 3.02344, "delta_overall": 3.88281},
    ),
}


@pytest.mark.parametrize("filename", sorted(PARSE_CASES))
def test_parse_each_benchmark_model_format(filename):
    fmt, count, avg, std, low, high, median, init_us, warm_count, first, memory = PARSE_CASES[filename]
    parsed = parse_benchmark_model_output(_output(filename))
    assert parsed["format"] == fmt
    inference = parsed["inference"]
    assert inference["count"] == count
    assert inference["avg"] == pytest.approx(avg)
    assert inference["std"] == std
    assert (inference["min"], inference["max"]) == (low, high)
    assert inference.get("median") == median
    assert parsed["inference_avg_us"] == pytest.approx(avg)
    assert parsed["init_us"] == init_us
    assert parsed["warmup"]["count"] == warm_count
    assert parsed["first_inference_us"] == first
    assert parsed["memory_mb"] == memory


def test_parse_single_run_and_all_same_lines():
    parsed = parse_benchmark_model_output(
        "INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 "
        "seconds.\nINFO: count=1 curr=1357602 p5=1357602 median=1357602 p95=1357602\n\n"
        "INFO: Running benchmark for at least 3 iterations and at least 1 seconds but terminate if exceeding 150 "
        "seconds.\nINFO: count=3 curr=250(all same) p5=250 median=250 p95=250\n"
    )
    assert parsed["warmup"] == {
        "count": 1, "first": 1357602, "curr": 1357602, "min": 1357602, "max": 1357602, "avg": 1357602, "std": 0.0,
        "p5": 1357602, "median": 1357602, "p95": 1357602,
    }
    assert parsed["inference"]["count"] == 3 and parsed["inference"]["avg"] == 250
    assert parsed["init_us"] is None and parsed["memory_mb"] == {}


def test_parse_ignores_per_operator_profiling_statistics():
    # A grep of the run lines (no "Running benchmark" headers) plus the profiler's own statistics.
    text = (
        "count=7 first=30 curr=20 min=19 max=30 avg=22 std=3\n"
        "count=50 first=21 curr=20 min=18 max=25 avg=20.5 std=1\n"
        "Timings (microseconds): count=50 first=79449 curr=81350 min=77385 max=88213 avg=79732 std=1929\n"
        "Memory (bytes): count=0\n"
    )
    parsed = parse_benchmark_model_output(text)
    assert parsed["inference"]["avg"] == 20.5 and parsed["warmup"]["count"] == 7
    assert parsed["format"] == "stats_only"


def test_parse_android_app_logcat_summary():
    parsed = parse_benchmark_model_output(
        "06-12 10:00:01.123  4242  4242 E tflite  : Average inference timings in us: Warmup: 91471, Init: 4108, "
        "Inference: 80660.1"
    )
    assert parsed["inference_avg_us"] == 80660.1 and parsed["init_us"] == 4108
    assert parsed["warmup_avg_us"] == 91471 and parsed["inference"] is None


@pytest.mark.parametrize(
    "text",
    [
        _output("failed_unsupported_op.txt"),
        "Segmentation fault\n",
        "",
        "Running benchmark for at least 1 iterations\ncount=0\n",
    ],
)
def test_parse_garbage_raises_and_shows_the_output(text):
    with pytest.raises(BenchmarkOutputError, match="Could not find the inference timings") as info:
        parse_benchmark_model_output(text)
    last_line = text.strip().splitlines()[-1] if text.strip() else "<empty output>"
    assert last_line in str(info.value)


# ---------------------------------------------------------------------------
# Android over a fake adb
# ---------------------------------------------------------------------------


class FakeAdb:
    """The fake adb of tests/fixtures on PATH, its device folder and its call log."""

    def __init__(self, tmp_path, monkeypatch):
        self.bin_dir = tmp_path / "bin"
        self.bin_dir.mkdir()
        self.root = tmp_path / "device"
        self.root.mkdir()
        self.log_path = tmp_path / "adb_calls.jsonl"
        self.path = self.bin_dir / "adb"
        self.path.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "{FAKE_ADB}" "$@"\n')
        self.path.chmod(0o755)
        self.monkeypatch = monkeypatch
        monkeypatch.setenv("PATH", f"{self.bin_dir}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("FAKE_ADB_ROOT", str(self.root))
        monkeypatch.setenv("FAKE_ADB_LOG", str(self.log_path))
        monkeypatch.delenv("ANDROID_SERIAL", raising=False)
        self.set(devices="R58M30ABCDE:device", output="litert_percentiles.txt", exit_status=0)

    def set(self, devices=None, output=None, exit_status=None):
        if devices is not None:
            self.monkeypatch.setenv("FAKE_ADB_DEVICES", devices)
        if output is not None:
            self.monkeypatch.setenv("FAKE_ADB_OUTPUT", os.path.join(OUTPUTS, output))
        if exit_status is not None:
            self.monkeypatch.setenv("FAKE_ADB_EXIT", str(exit_status))

    def calls(self):
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines()]

    def device_files(self):
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    return FakeAdb(tmp_path, monkeypatch)


@pytest.fixture
def files(tmp_path):
    model = tmp_path / "student_int8.tflite"
    model.write_bytes(b"TFL3" + bytes(1020))
    binary = tmp_path / "android_aarch64_benchmark_model"
    binary.write_bytes(b"\x7fELF" + bytes(60))
    return str(model), str(binary)


def _shell_commands(calls):
    return [" ".join(call[call.index("shell") + 1:]) for call in calls if "shell" in call]


def test_android_litert_output_to_result_and_cleanup(fake_adb, files):
    model, binary = files
    result = benchmark_android(model, binary, num_threads=1, warmup_runs=5, num_runs=100, cpu_mask="f0")
    assert result.backend == "benchmark_model"
    assert result.device == "Pixel 7"
    assert result.name == "student_int8.tflite" and result.file_size_bytes == 1024
    assert result.num_runs == 4987  # what benchmark_model actually ran (it also honours --min_secs)
    assert result.mean_ms == pytest.approx(0.19985)
    assert result.p50_ms == pytest.approx(0.197) and result.typical_ms == result.p50_ms
    assert result.p90_ms is None and result.p99_ms is None  # benchmark_model prints no p90/p99
    assert result.min_ms <= result.p50_ms <= result.max_ms
    assert result.init_ms == pytest.approx(2.118)
    assert result.extra["p5_ms"] == pytest.approx(0.185) and result.extra["p95_ms"] == pytest.approx(0.221)
    assert result.extra["first_inference_ms"] == pytest.approx(0.318)
    assert result.extra["memory_mb"] == {"delta_init": 3.02344, "delta_overall": 3.88281}
    assert (result.num_threads, result.warmup_runs, result.use_xnnpack) == (1, 5, True)
    assert result.extra["serial"] == "R58M30ABCDE" and result.extra["abi"] == "arm64-v8a"

    calls = fake_adb.calls()
    assert calls[0] == ["devices"]
    assert all(call[:2] == ["-s", "R58M30ABCDE"] for call in calls[1:])
    pushes = [call[3:] for call in calls if "push" in call]
    assert pushes == [
        [model, f"{DEVICE_DIR}/student_int8.tflite"],
        [binary, f"{DEVICE_DIR}/benchmark_model"],
    ]
    shell = _shell_commands(calls)
    assert "getprop ro.product.model" in shell
    assert f"chmod +x {DEVICE_DIR}/benchmark_model" in shell
    run = next(c for c in shell if "--graph=" in c)
    assert run.startswith(f"taskset f0 {DEVICE_DIR}/benchmark_model ")
    for flag in (f"--graph={DEVICE_DIR}/student_int8.tflite", "--num_threads=1", "--use_gpu=false",
                 "--use_nnapi=false", "--use_xnnpack=true", "--warmup_runs=5", "--num_runs=100"):
        assert flag in run.split()
    assert shell[-2] == f"rm -f {DEVICE_DIR}/student_int8.tflite {DEVICE_DIR}/benchmark_model"
    assert shell[-1] == f"rmdir {DEVICE_DIR}"
    assert fake_adb.device_files() == []
    assert not (fake_adb.root / DEVICE_DIR.lstrip("/")).exists()


@pytest.mark.parametrize("filename", sorted(PARSE_CASES))
def test_android_every_recorded_format(fake_adb, files, filename):
    fake_adb.set(output=filename)
    result = benchmark_android(*files, use_gpu=True, use_nnapi=True, use_xnnpack=False, extra_flags=["--min_secs=0"])
    _, count, avg, *_ = PARSE_CASES[filename]
    assert result.num_runs == count
    assert result.mean_ms == pytest.approx(avg / 1e3)
    assert result.min_ms <= result.mean_ms <= result.max_ms
    assert result.extra["output_format"] == PARSE_CASES[filename][0]
    run = next(c for c in _shell_commands(fake_adb.calls()) if "--graph=" in c).split()
    assert {"--use_gpu=true", "--use_nnapi=true", "--use_xnnpack=false", "--min_secs=0"} <= set(run)
    assert run[0] == f"{DEVICE_DIR}/benchmark_model"  # no taskset without cpu_mask
    assert fake_adb.device_files() == []


def test_android_explicit_adb_path(fake_adb, files, monkeypatch):
    monkeypatch.setenv("PATH", os.defpath)  # not on PATH: only the explicit path can work
    result = benchmark_android(*files, adb=str(fake_adb.path))
    assert result.device == "Pixel 7" and fake_adb.calls()[0] == ["devices"]


def test_android_several_devices_need_a_serial(fake_adb, files):
    fake_adb.set(devices="emulator-5554:device;R58M30ABCDE:device")
    with pytest.raises(AndroidBenchmarkError, match="Several devices.*pass serial= with one of: emulator-5554, R58M"):
        benchmark_android(*files)
    assert [c for c in fake_adb.calls() if "push" in c] == []
    result = benchmark_android(*files, serial="emulator-5554")
    assert result.extra["serial"] == "emulator-5554"
    assert all(call[:2] == ["-s", "emulator-5554"] for call in fake_adb.calls()[2:])


def test_android_serial_from_environment(fake_adb, files, monkeypatch):
    fake_adb.set(devices="emulator-5554:device;R58M30ABCDE:device")
    monkeypatch.setenv("ANDROID_SERIAL", "R58M30ABCDE")
    assert benchmark_android(*files).extra["serial"] == "R58M30ABCDE"


def test_android_unknown_serial(fake_adb, files):
    with pytest.raises(AndroidBenchmarkError, match="No device with serial 'nope'.*R58M30ABCDE \\(device\\)"):
        benchmark_android(*files, serial="nope")


def test_android_no_device(fake_adb, files):
    fake_adb.set(devices="")
    with pytest.raises(AndroidBenchmarkError, match="No Android device is attached.*USB debugging"):
        benchmark_android(*files)
    assert fake_adb.calls() == [["devices"]]


@pytest.mark.parametrize(
    "state, hint", [("unauthorized", "Allow USB debugging"), ("offline", "reconnect the cable")]
)
def test_android_device_not_ready(fake_adb, files, state, hint):
    fake_adb.set(devices=f"R58M30ABCDE:{state}")
    with pytest.raises(AndroidBenchmarkError, match=f"R58M30ABCDE is '{state}'.*{hint}"):
        benchmark_android(*files)
    with pytest.raises(AndroidBenchmarkError, match=f"'{state}'.*{hint}"):
        benchmark_android(*files, serial="R58M30ABCDE")


def test_android_missing_adb(files, tmp_path, monkeypatch):
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(FileNotFoundError, match="Could not find 'adb' on PATH.*platform-tools.*adb="):
        benchmark_android(*files)
    with pytest.raises(FileNotFoundError, match="is not an executable file.*platform-tools"):
        benchmark_android(*files, adb=str(tmp_path / "sdk" / "adb"))


def test_android_missing_binary_or_model(fake_adb, files, tmp_path):
    model, _ = files
    with pytest.raises(FileNotFoundError, match="benchmark_model binary .* does not exist.*android_aarch64"):
        benchmark_android(model, str(tmp_path / "benchmark_model"))
    with pytest.raises(FileNotFoundError, match="No .tflite file"):
        benchmark_android(str(tmp_path / "missing.tflite"), files[1])
    assert fake_adb.calls() == []  # nothing is attempted before the inputs are checked


def test_android_failed_run_shows_output_and_cleans_up(fake_adb, files):
    fake_adb.set(output="failed_unsupported_op.txt", exit_status=1)
    with pytest.raises(BenchmarkOutputError, match="exit status 1") as info:
        benchmark_android(*files)
    assert "Didn't find op for builtin opcode 'FULLY_CONNECTED'" in str(info.value)
    assert "ERROR: Benchmarking failed." in str(info.value)
    shell = _shell_commands(fake_adb.calls())
    assert shell[-2].startswith("rm -f ") and fake_adb.device_files() == []


def test_android_nonzero_exit_after_timings_is_an_error(fake_adb, files):
    fake_adb.set(output="tflite_2_3_peak_memory.txt", exit_status=139)
    with pytest.raises(AndroidBenchmarkError, match="exited with status 139"):
        benchmark_android(*files)
    assert fake_adb.device_files() == []


def test_android_garbage_output(fake_adb, files, tmp_path):
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("Hello from a binary that is not benchmark_model\nusage: frobnicate [-x]\n")
    fake_adb.monkeypatch.setenv("FAKE_ADB_OUTPUT", str(garbage))
    with pytest.raises(BenchmarkOutputError, match="usage: frobnicate"):
        benchmark_android(*files)
    assert fake_adb.device_files() == []


def test_android_push_failure_still_cleans_up(fake_adb, files, monkeypatch):
    # The model is pushed, then the device fills up before the binary: the model is removed again.
    monkeypatch.setenv("FAKE_ADB_FAIL_PUSH", "benchmark_model")
    with pytest.raises(AndroidBenchmarkError, match="(?s)push.*failed with exit status 1.*No space left on device"):
        benchmark_android(*files)
    shell = _shell_commands(fake_adb.calls())
    assert shell[-2].startswith("rm -f ") and fake_adb.device_files() == []


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"cpu_mask": "zz"}, ValueError, "hexadecimal affinity mask"),
        ({"cpu_mask": 0}, ValueError, "hexadecimal affinity mask"),
        ({"device_dir": "relative/dir"}, ValueError, "absolute directory"),
        ({"extra_flags": "--min_secs=0"}, TypeError, "wrap it in a list"),
        ({"extra_flags": ["min_secs=0"]}, ValueError, "--name=value"),
    ],
)
def test_android_argument_validation(fake_adb, files, kwargs, error, message):
    with pytest.raises(error, match=message):
        benchmark_android(*files, **kwargs)
    assert fake_adb.calls() == []


def test_android_integer_cpu_mask(fake_adb, files):
    benchmark_android(*files, cpu_mask=0xF0)
    assert any(c.startswith("taskset f0 ") for c in _shell_commands(fake_adb.calls()))


# ---------------------------------------------------------------------------
# export/android_benchmark.sh with the same fake adb
# ---------------------------------------------------------------------------


def _run_script(*args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, env=env, timeout=60)


def test_script_runs_prints_and_cleans_up(fake_adb, files):
    model, binary = files
    done = _run_script("-t", "1", "-m", "f0", "-w", "3", "-r", "50", model, binary, "--", "--min_secs=0")
    assert done.returncode == 0, done.stderr
    assert "Device: Pixel 7 (R58M30ABCDE)" in done.stdout
    assert "Inference timings in us: Init: 2118" in done.stdout.split("----- summary -----")[1]
    shell = _shell_commands(fake_adb.calls())
    run = next(c for c in shell if "--graph=" in c)
    assert run.startswith(f"taskset f0 '{DEVICE_DIR}/benchmark_model' ")
    for flag in ("--num_threads=1", "--warmup_runs=3", "--num_runs=50", "--use_xnnpack=true", "'--min_secs=0'"):
        assert flag in run.split()
    assert shell[-2].startswith("rm -f ") and shell[-1].startswith("rmdir ")
    assert fake_adb.device_files() == []


def test_script_usage_and_errors(fake_adb, files, tmp_path):
    model, binary = files
    done = _run_script()
    assert done.returncode == 2 and "Usage: android_benchmark.sh" in done.stderr
    done = _run_script("-h")
    assert done.returncode == 0 and "Usage:" in done.stdout
    done = _run_script(model, str(tmp_path / "missing_binary"))
    assert done.returncode == 1 and "no benchmark_model binary" in done.stderr
    done = _run_script("-r", "0", model, binary)
    assert done.returncode == 1 and "-r RUNS must be an integer >= 1" in done.stderr
    fake_adb.set(devices="emulator-5554:device;R58M30ABCDE:device")
    done = _run_script(model, binary)
    assert done.returncode == 1 and "several devices attached" in done.stderr
    fake_adb.set(devices="R58M30ABCDE:unauthorized")
    done = _run_script(model, binary)
    assert done.returncode == 1 and "no usable device" in done.stderr
    assert [c for c in fake_adb.calls() if "push" in c] == []
    done = _run_script(model, binary, env_extra={"ADB": str(tmp_path / "no_adb_here")})
    assert done.returncode == 1 and "platform-tools" in done.stderr


def test_script_failed_run_cleans_up(fake_adb, files):
    fake_adb.set(output="failed_unsupported_op.txt", exit_status=1)
    done = _run_script(*files)
    assert done.returncode == 1
    assert "Didn't find op for builtin opcode" in done.stdout
    assert "printed no timings" in done.stderr
    assert fake_adb.device_files() == []


def test_cli_android_passes_warmup_and_no_xnnpack(fake_adb, files, capsys):
    from keras_kd.cli import main

    model, binary = files
    assert main(["benchmark", model, "--android", "--benchmark-binary", binary, "--warmup", "7", "--no-xnnpack",
                 "--runs", "50", "--threads", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["warmup_runs"], result["use_xnnpack"], result["num_threads"]) == (7, False, 2)
    run = next(c for c in _shell_commands(fake_adb.calls()) if "--graph=" in c).split()
    for flag in ("--warmup_runs=7", "--use_xnnpack=false", "--num_runs=50", "--num_threads=2"):
        assert flag in run
