"""examples/qat_distill_to_tflite.py runs end to end at a small size and writes a verified INT8 file."""

import os
import re

import pytest

from keras_kd.export import inspect_tflite
from tests.helpers import run_example


@pytest.mark.slow
def test_example_distils_quantizes_and_exports_int8(tmp_path):
    out = tmp_path / "out"
    args = ["--limit", "300", "--teacher-epochs", "2", "--epochs", "2", "--qat-epochs", "1", "--out", str(out)]
    completed = run_example("qat_distill_to_tflite.py", args, tmp_path, timeout=300)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    stdout = completed.stdout

    path = out / "student_qat_int8.tflite"
    assert path.is_file(), stdout
    summary = inspect_tflite(str(path))
    assert [t.dtype for t in summary.inputs] == ["int8"]
    assert [t.dtype for t in summary.outputs] == ["int8"]
    assert summary.float_ops == []
    assert summary.op_counts.get("CONV_2D") == 2 and summary.op_counts.get("FULLY_CONNECTED") == 2

    match = re.search(r"^agreement: ([0-9.]+) ", stdout, re.MULTILINE)
    assert match, stdout
    assert float(match.group(1)) >= 0.9, stdout
    assert re.search(r"^student INT8 \.tflite\s+[0-9.]+$", stdout, re.MULTILINE), stdout
    assert f"size_bytes: {os.path.getsize(path)}" in stdout
