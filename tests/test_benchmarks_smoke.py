"""Smoke tests of the scripts in benchmarks/ (they must run; their timings are not checked here)."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DISTILL_THROUGHPUT = os.path.join(ROOT, "benchmarks", "distill_throughput.py")
RATIO_LABELS = (
    "keras_kd/keras.distillation",
    "keras_kd-bf16/keras.distillation",
    "cached/student-only",
    "uncached/student-only",
)
VARIANTS = ("student-only", "keras_kd", "keras_kd-cached", "keras_kd-bf16", "keras.distillation")


def _load_script(path):
    spec = importlib.util.spec_from_file_location("distill_throughput_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_quick(script, json_path, timeout):
    """Runs a benchmark script with --quick on Keras 3 in a subprocess; it must succeed."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
    env.pop("TF_USE_LEGACY_KERAS", None)
    result = subprocess.run([sys.executable, script, "--quick", "--json", str(json_path)],
                            capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_distill_throughput_arguments():
    script = _load_script(DISTILL_THROUGHPUT)
    quick = script.parse_args(["--quick"])
    assert (quick.rounds, quick.batch_size, quick.steps) == (1, 32, 6)
    full = script.parse_args(["--rounds", "2", "--batch-size", "64"])
    assert (full.rounds, full.batch_size, full.steps, full.warmup) == (2, 64, 60, 3)
    with pytest.raises(SystemExit):
        script.parse_args(["--batch-size", "0"])
    with pytest.raises(SystemExit):
        script.parse_args(["--warmup", "0"])


@pytest.mark.slow
def test_distill_throughput_quick_prints_ratios(tmp_path):
    out = tmp_path / "figures.json"
    result = _run_quick(DISTILL_THROUGHPUT, out, timeout=240)
    for label in RATIO_LABELS:
        assert re.search(rf"^ratio {re.escape(label)}\s+\d+\.\d+x", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"top-1 agreement on \d+ test samples: \d+\.\d+%", result.stdout), result.stdout
    assert "one-off teacher caching" in result.stdout

    figures = json.loads(out.read_text())
    assert set(figures["samples_per_s"]) == set(VARIANTS)
    assert all(value > 0 for value in figures["samples_per_s"].values())
    assert set(figures["ratios"]) == set(RATIO_LABELS)
    assert 0.0 <= figures["bf16_vs_float_top1_agreement"] <= 1.0
    assert figures["caching_s"] > 0
    # The teacher is about 8x the student, as the README says.
    assert 6 <= figures["config"]["teacher_params"] / figures["config"]["student_params"] <= 10


QAT_NETWORKS = os.path.join(ROOT, "benchmarks", "qat_networks.py")


def test_qat_networks_arguments():
    script = _load_script(QAT_NETWORKS)
    quick = script.parse_args(["--quick"])
    assert quick.names == list(script.QUICK) and (quick.limit, quick.epochs, quick.qat_epochs) == (300, 1, 1)
    full = script.parse_args(["--networks", "MobileNetV3Small,EfficientNetB0"])
    assert full.names == ["MobileNetV3Small", "EfficientNetB0"] and full.epochs == 8
    with pytest.raises(SystemExit):
        script.parse_args(["--networks", "ResNet50"])
    # every network the issue names is in the table
    assert {"MobileNetV2-0.35", "MobileNetV3Small", "MobileNetV3Large", "EfficientNetB0", "text transformer"} <= set(
        script.NETWORKS
    )


def _untrained_row(mode, network, tmp_path):
    """`qat_networks.py --sizes` or `--layers` on one network and 100 samples: its JSON row."""
    out = tmp_path / "figures.json"
    assert _load_script(QAT_NETWORKS).main([mode, "--networks", network, "--limit", "100", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    return row


@pytest.mark.slow
def test_qat_networks_sizes_stripping_names_shrinks_the_compacted_file(tmp_path, capsys):
    row = _untrained_row("--sizes", "Conv1D keyword spotting", tmp_path)
    assert row["stripped"] < row["compact"] < row["converted"] < 0.5 * row["float32"]
    # its Conv1D kernels take one scale each under per_channel="depthwise": no per-channel scales or zero points
    assert row["depthwise_stripped"] < row["stripped"] and row["depthwise_compact"] < row["compact"]
    assert re.search(r"^\| Conv1D keyword spotting \| 24 K \|", capsys.readouterr().out, re.MULTILINE)


@pytest.mark.slow
def test_qat_networks_layers_runs_every_layer_on_the_files_inputs(tmp_path, capsys):
    row = _untrained_row("--layers", "SeparableConv2D net", tmp_path)
    # every layer of this net has a tensor in the file and computes what its op computes (measured: 1.00)
    assert row["checked"] == row["layers"] > 5
    assert row["local_max_steps"] <= 1.01 and row["over_one_step"] == [], row
    assert re.search(r"^\| SeparableConv2D net \| 25 K \| \d+ \| \d+ \| 1\.00 ", capsys.readouterr().out, re.MULTILINE)


PER_CHANNEL = os.path.join(ROOT, "benchmarks", "per_channel.py")


@pytest.mark.slow
def test_per_channel_quick_measures_the_three_modes_from_one_student(tmp_path, capsys):
    out = tmp_path / "per_channel.json"
    assert _load_script(PER_CHANNEL).main(["--quick", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    modes = [row[key] for key in ("True", "depthwise", "False")]
    assert all(0.0 <= mode["int8_accuracy"] <= 1.0 and mode["agreement"] >= 0.9 for mode in modes), row
    # the keyword-spotting net has no depthwise kernel: "depthwise" and False write the same, smaller file
    assert modes[1]["size_ratio"] == modes[2]["size_ratio"] < modes[0]["size_ratio"], row
    assert "QAT INT8 over 1 seed(s)" in capsys.readouterr().out
    latency = tmp_path / "latency.json"
    assert _load_script(PER_CHANNEL).main(["--latency", "--networks", "Conv1D keyword spotting", "--limit", "100",
                                           "--rounds", "1", "--runs", "5", "--json", str(latency)]) == 0
    (row,) = json.loads(latency.read_text())["rows"]
    assert row["ratio"]["True"] == 1.0 and all(value > 0 for value in row["p50_ms"].values()), row


QUALITY = os.path.join(ROOT, "benchmarks", "quality.py")


def test_quality_arguments():
    script = _load_script(QUALITY)
    quick = script.parse_args(["--quick"])
    assert (quick.datasets, quick.seeds, quick.epochs, quick.cache_dir) == (["mnist5k"], [0, 1], 1, "")
    full = script.parse_args([])
    assert full.seeds == [0, 1, 2] and set(full.methods) == set(script.METHODS)
    assert set(full.datasets) == {"fashion_mnist", "mnist5k"}
    with pytest.raises(SystemExit):
        script.parse_args(["--methods", "nonsense"])
    # the bound: a student with at most 1/20 of the teacher's parameters
    assert full.student == "tiny" and script.parse_args(["--student", "small"]).student == "small"
    teacher = script.build_teacher((28, 28, 1), 10).count_params()
    for size, ratio in (("tiny", 80), ("small", 20)):
        assert teacher / script.build_student((28, 28, 1), 10, size=size).count_params() >= ratio


@pytest.mark.slow
def test_quality_quick_compares_with_the_control(tmp_path):
    out = tmp_path / "quality.json"
    result = _run_quick(QUALITY, out, timeout=400)
    assert re.search(r"^control\s+\d+\.\d +\+-", result.stdout, re.MULTILINE), result.stdout
    assert "the teacher's share of a logit-KD step" in result.stdout
    (figures,) = json.loads(out.read_text())
    assert set(figures["variants"]) == {"control", "kd_defaults", "control (mixup)", "function_matching"}
    assert all(len(row["errors"]) == 2 for row in figures["variants"].values())
    assert set(figures["step_seconds"]) == {"student alone (same augmentation)", "logit KD",
                                            "function matching (mixup)", "logit KD, bfloat16 teacher"}
