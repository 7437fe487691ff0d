"""The keras-kd command: help, exit codes, and the commands on tiny inputs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_kd.cli import build_parser, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("quickstart", "distill", "export", "benchmark", "report"):
        assert command in out


@pytest.mark.parametrize("command", ["quickstart", "distill", "export", "benchmark", "report"])
def test_each_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: keras-kd " + command in capsys.readouterr().out


def test_bad_input_exits_2_with_a_message(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing.keras")]) == 2
    assert "no model file at" in capsys.readouterr().err
    assert main(["benchmark", str(tmp_path / "missing.tflite")]) == 2
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    bad = tmp_path / "config.yaml"
    bad.write_text("teacher: t.keras\nstudnet: s.keras\n")
    assert main(["distill", str(bad)]) == 2
    assert "unknown config keys ['studnet']" in capsys.readouterr().err
    bad.write_text("- just\n- a list\n")
    assert main(["distill", str(bad)]) == 2
    assert "must hold a mapping" in capsys.readouterr().err


@pytest.mark.slow
def test_distill_export_benchmark_report_chain(tmp_path, capsys):
    from keras_kd.backend import keras
    from keras_kd.quickstart import build_student

    teacher = build_student((8, 8, 1), 10, width=8, hidden=32, name="t")
    teacher.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.save(tmp_path / "teacher.keras")
    build_student((8, 8, 1), 10, width=4, hidden=16, name="s").save(tmp_path / "student.keras")
    config = tmp_path / "run.yaml"
    config.write_text(
        f"teacher: {tmp_path / 'teacher.keras'}\nstudent: {tmp_path / 'student.keras'}\ndataset: digits\n"
        "epochs: 2\nlimit: 200\nalpha: 0.7\ntemperature: 4\n"
        "schedules:\n  temperature: {class_name: Linear, config: {start: 4, end: 2, steps: 1}}\n"
        f"output: {tmp_path / 'run'}\n"
    )
    assert main(["distill", str(config), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["history"]["temperature"] == [4.0, 2.0]
    x = np.random.default_rng(0).random((50, 8, 8, 1)).astype("float32")
    np.save(tmp_path / "calibration.npy", x)
    assert main(["export", summary["student"], "--calibration", str(tmp_path / "calibration.npy"),
                 "--output", str(tmp_path / "s.tflite"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["size_bytes"] > 0 and report["float_ops"] == []
    assert main(["benchmark", str(tmp_path / "s.tflite"), "--runs", "5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["p50_ms"] > 0 and result["num_runs"] == 5


@pytest.mark.slow
def test_quickstart_small_writes_a_report(tmp_path):
    out = tmp_path / "qs"
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "keras_kd.cli", "quickstart", "--out", str(out), "--teacher-epochs", "1",
         "--epochs", "1", "--qat-epochs", "1", "--limit", "300", "--json"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(result.stdout)
    assert [row["name"] for row in document["rows"]][0] == "teacher (Keras)"
    for name in ("report.md", "report.json", "accuracy_vs_latency.png", "curriculum.png",
                 "student_int8_qat.tflite", "student_int8_ptq.tflite", "teacher.keras"):
        assert (out / name).is_file(), name
    from keras_kd.cli import main as cli_main

    assert cli_main(["report", str(out)]) == 0
