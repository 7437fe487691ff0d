"""examples/mobilenet_qat.py runs end to end at a small size and writes a verified all-int8 MobileNetV3Small."""

import re

import pytest

from keras_kd.export import inspect_tflite
from tests.helpers import run_example


@pytest.mark.slow
def test_mobilenet_example_distils_quantizes_and_exports_int8(tmp_path):
    out = tmp_path / "out"
    args = ["--limit", "200", "--teacher-epochs", "1", "--epochs", "1", "--qat-epochs", "1", "--out", str(out)]
    completed = run_example("mobilenet_qat.py", args, tmp_path, timeout=900)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    stdout = completed.stdout
    summary = inspect_tflite(str(out / "mobilenet_v3_small_int8.tflite"))
    assert [t.dtype for t in summary.inputs] == ["int8"] and [t.dtype for t in summary.outputs] == ["int8"]
    assert summary.float_ops == []
    assert summary.op_counts.get("HARD_SWISH", 0) > 0 and summary.op_counts.get("DEPTHWISE_CONV_2D", 0) > 0
    match = re.search(r"^agreement: ([0-9.]+) of", stdout, re.MULTILINE)
    assert match and float(match.group(1)) >= 0.95, stdout
    assert re.search(r"^host latency \(1 thread, p50\): float32 [0-9.]+ ms, int8 [0-9.]+ ms", stdout, re.MULTILINE)
