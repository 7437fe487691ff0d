"""The keras-kd command: help, exit codes, and the commands on tiny inputs."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from keras_kd.cli import DISTILL_OUTPUT, QUICKSTART_OUTPUT, build_parser, main, validate_distill_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE_CONFIGS = sorted(
    os.path.join(ROOT, "examples", "configs", name) for name in os.listdir(os.path.join(ROOT, "examples", "configs"))
)
MODEL = {"module": "keras", "class_name": "Sequential", "config": {"name": "m", "layers": []}}


def _subcommands():
    """{command: its argparse parser}, read from the parser itself so a new command is tested without an edit."""
    import argparse

    (action,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


COMMANDS = sorted(_subcommands())


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert COMMANDS == ["benchmark", "compare", "distill", "export", "quickstart", "report"]
    for command in COMMANDS:
        assert command in out


@pytest.mark.parametrize("command", COMMANDS)
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
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    previous = os.umask(0o022)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "keras_kd.cli", "quickstart", "--out", str(out), "--teacher-epochs", "1",
             "--epochs", "1", "--qat-epochs", "1", "--limit", "300", "--json"],
            capture_output=True, text=True, env=env, timeout=600,
        )
    finally:
        os.umask(previous)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == ""  # no TensorFlow start-up lines, no retracing warnings
    for path in out.iterdir():  # the umask's permissions, not mkstemp's 0600
        assert oct(path.stat().st_mode & 0o777) == oct(0o644), path.name
    document = json.loads(result.stdout)
    assert [row["name"] for row in document["rows"]][0] == "teacher (Keras)"
    for name in ("report.md", "report.json", "accuracy_vs_latency.png", "curriculum.png",
                 "student_int8_qat.tflite", "student_int8_ptq.tflite", "teacher.keras"):
        assert (out / name).is_file(), name
    from keras_kd.cli import main as cli_main

    assert cli_main(["report", str(out)]) == 0



# --------------------------------------------------------------------------- issue 11, items 12-15


def _config(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text("teacher: {module: keras, class_name: Sequential, config: {layers: []}}\n"
                    "student: {module: keras, class_name: Sequential, config: {layers: []}}\n"
                    f"output: {tmp_path / 'run'}\n" + text)
    return str(path)


@pytest.mark.parametrize("line, expected", [
    ("epochs: three", r"epochs: got the string 'three'; expected a positive whole number"),
    ("epochs: '3'", r"epochs: got the string '3' \(remove the quotes\)"),
    ("epochs: 2.7", r"epochs: got 2\.7, which has a fraction; it is not rounded for you; expected a positive whole"),
    ("batch_size: -5", r"batch_size: got -5; expected a positive whole number"),
    ("alpha: 1.5", r"alpha: got 1\.5; expected a number in \[0, 1\]"),
    ("temperature: 0", r"temperature: got 0; expected a number > 0"),
    ("qat: yes please", r"qat: got the string 'yes please'; expected true or false"),
    ("qat: true\nper_channel: pointwise", r"per_channel: got the string 'pointwise'; expected true, depthwise or false"),
    ("per_channel: false", r"per_channel: got the boolean False without qat: true; it only applies to a quantization"),
    ("per_channel: true", r"per_channel: got the boolean True without qat: true; it only applies to a quantization"),
    ("dataset: mnist6k", r"dataset: Unknown dataset 'mnist6k'"),
    ("schedules: {temperature: {start: 4, end: 2, steps: 3}}",
     r"schedules\.temperature: got a dict .* without a class_name; write it as "
     r"\{class_name: Linear, config: \{start: 4, end: 2, steps: 3\}\}"),
])
def test_config_errors_name_the_key_the_value_and_the_form(tmp_path, capsys, line, expected):
    assert main(["distill", _config(tmp_path, line + "\n")]) == 2
    err = capsys.readouterr().err
    assert re.search(expected, err), err
    assert "examples/configs/" in err
    assert not (tmp_path / "run").exists()  # no empty run folder left behind


def _named_config(tmp_path, text):
    path = tmp_path / "run.yaml"
    model = "{module: keras, class_name: Sequential, config: {name: m, layers: []}}"
    path.write_text(f"teacher: {model}\nstudent: {model}\noutput: {tmp_path / 'run'}\n" + text)
    return str(path)


def test_per_channel_reaches_quantize_model(tmp_path, monkeypatch, capsys):
    import keras_kd.quantization

    def quantize_model(student, **kwargs):  # stops the run where the student is quantized
        raise RuntimeError(f"quantize_model called with {kwargs}")

    monkeypatch.setattr(keras_kd.quantization, "quantize_model", quantize_model)
    config = _named_config(tmp_path, "qat: true\nper_channel: depthwise\ndataset: digits\nlimit: 20\n")
    assert main(["distill", config]) != 0
    assert "quantize_model called with {'per_channel': 'depthwise'}" in capsys.readouterr().err


def test_every_config_problem_is_listed_at_once(tmp_path, capsys):
    assert main(["distill", _config(tmp_path, "epochs: three\nbatch_size: -5\nstudnet: x\n")]) == 2
    err = capsys.readouterr().err
    assert "has 3 problems" in err and "epochs:" in err and "batch_size:" in err and "'studnet'" in err


def test_config_is_checked_before_tensorflow_loads(tmp_path):
    config = _config(tmp_path, "epochs: three\n")
    code = ("import sys; from keras_kd.cli import main; code = main(['distill', %r]); "
            "sys.exit(10 + code if 'tensorflow' in sys.modules else code)" % config)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "epochs: got the string 'three'" in result.stderr
    assert not (tmp_path / "run").exists()


def test_bad_schedule_class_is_named_before_data_or_models_load(tmp_path, capsys, monkeypatch):
    import keras_kd.data

    monkeypatch.setattr(keras_kd.data, "load_dataset", lambda *a, **k: pytest.fail("data loaded before checks"))
    config = _config(tmp_path, "schedules: {alpha: {class_name: Linaer, config: {start: 1, end: 0, steps: 2}}}\n")
    assert main(["distill", config]) == 2
    err = capsys.readouterr().err
    assert "schedules.alpha: Unknown schedule 'Linaer'" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("path", EXAMPLE_CONFIGS, ids=os.path.basename)
def test_example_configs_validate(path, tmp_path, monkeypatch):
    import yaml

    from keras_kd import cli
    from keras_kd.backend import keras

    with open(path) as handle:
        config = yaml.safe_load(handle)
    monkeypatch.chdir(tmp_path)  # the models the examples name, as `keras-kd quickstart` leaves them
    for key in ("teacher", "student"):
        if isinstance(config[key], str):
            os.makedirs(os.path.dirname(config[key]) or ".", exist_ok=True)
            open(config[key], "w").close()
    settings = validate_distill_config(config, source=path)
    assert settings["epochs"] >= 1 and settings["dataset"]
    assert cli._build_schedule_callbacks(settings["schedules"])
    assert cli._build_optimizer(settings["optimizer"])
    for key in ("teacher", "student"):
        if isinstance(config[key], dict):
            model = keras.saving.deserialize_keras_object(config[key])
            assert model.count_params() > 0


def test_help_points_to_the_example_configs(capsys):
    for argv in (["--help"], ["distill", "--help"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(argv)
        assert "examples/configs/" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        build_parser().parse_args(["distill", "--help"])
    out = capsys.readouterr().out
    for key in ("epochs: a positive whole number", "schedules:", "--restart"):
        assert key in out


def test_default_run_folders_are_ignored_by_git():
    if not os.path.isdir(os.path.join(ROOT, ".git")):
        pytest.skip("not a git checkout")
    for folder in (QUICKSTART_OUTPUT, DISTILL_OUTPUT, "keras_kd_runs"):
        result = subprocess.run(["git", "check-ignore", "-q", f"{folder}/report.md"], cwd=ROOT)
        assert result.returncode == 0, f"{folder}/ is not in .gitignore"


def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    (run / "checkpoint" / "epoch_2.weights.h5").write_bytes(b"")
    (run / "checkpoint" / "state.json").write_text(json.dumps({"epoch": 2, "weights": "epoch_2.weights.h5"}))
    config = _config(tmp_path, "epochs: 4\nbatch_size: 32\n")
    stored = validate_distill_config({**__import__("yaml").safe_load(open(config)), "batch_size": 64})
    stored["output"] = str(run)
    (run / "run_config.json").write_text(json.dumps(stored))
    assert main(["distill", config]) == 2
    err = capsys.readouterr().err
    assert "holds a checkpoint of a run with other settings (changed: batch_size)" in err and "--restart" in err


def test_report_of_a_distill_run_folder_without_a_report(tmp_path, capsys):
    (tmp_path / "history.json").write_text(json.dumps({"loss": [0.9, 0.5], "val_accuracy": [0.8, 0.9]}))
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| Epoch | loss | val_accuracy |" in out and "| 2 | 0.5000 | 0.9000 |" in out
    assert main(["report", str(tmp_path / "nothing")]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    assert "holds neither report.json nor history.json" in capsys.readouterr().err


def test_export_without_calibration_names_the_flag(tmp_path, capsys):
    from keras_kd.backend import keras

    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    model.save(tmp_path / "m.keras")
    assert main(["export", str(tmp_path / "m.keras")]) == 2
    err = capsys.readouterr().err
    assert "pass --calibration FILE.npy" in err and "shape (N, 6)" in err and "--quantization float16" in err
    assert "representative_data=" not in err
    assert os.listdir(tmp_path) == ["m.keras"]


def _tiny_models(tmp_path):
    from keras_kd.backend import keras
    from keras_kd.quickstart import build_student

    keras.utils.set_random_seed(0)
    teacher = build_student((8, 8, 1), 10, width=8, hidden=32, name="t")
    teacher.save(tmp_path / "teacher.keras")
    build_student((8, 8, 1), 10, width=4, hidden=16, name="s").save(tmp_path / "student.keras")


def test_an_unwritable_run_folder_is_found_before_anything_loads(tmp_path, capsys, monkeypatch):
    import tempfile

    import keras_kd.data

    monkeypatch.setattr(keras_kd.data, "load_dataset", lambda *a, **k: pytest.fail("data loaded before checks"))

    def refuse(*args, **kwargs):
        raise PermissionError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    assert main(["distill", _config(tmp_path, "epochs: 2\n")]) == 2
    assert re.search(r"Cannot write the run folder .*Read-only file system", capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_a_run_that_fails_before_its_first_epoch_leaves_no_folder(tmp_path, capsys, monkeypatch):
    from keras_kd.distiller import Distiller

    _tiny_models(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(f"teacher: {tmp_path / 'teacher.keras'}\nstudent: {tmp_path / 'student.keras'}\n"
                      f"dataset: digits\nlimit: 64\nepochs: 1\noutput: {tmp_path / 'run'}\n")

    def fail(*args, **kwargs):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(Distiller, "fit", fail)
    assert main(["distill", str(config)]) == 1
    assert "out of memory (simulated)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


_KILL_AFTER_EPOCH_2 = """
import os, sys
from keras_kd import cli
from keras_kd.backend import keras

original = cli._run_callbacks

def with_a_kill(*args, **kwargs):
    history, callbacks = original(*args, **kwargs)

    class Kill(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 == 2:
                os._exit(9)  # as kill -9: no cleanup

    return history, [*callbacks, Kill()]

cli._run_callbacks = with_a_kill
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_distill_resumes_after_a_kill(tmp_path):
    _tiny_models(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(
        f"teacher: {tmp_path / 'teacher.keras'}\nstudent: {tmp_path / 'student.keras'}\ndataset: digits\n"
        "epochs: 4\nlimit: 128\nbatch_size: 32\nalpha: 0.7\ntemperature: 5\n"
        "schedules:\n  temperature: {class_name: Linear, config: {start: 5, end: 2, steps: 3}}\n"
        "  alpha: {class_name: Linear, config: {start: 0.7, end: 0.4, steps: 3}}\n"
        f"output: {tmp_path / 'run'}\n"
    )
    env = dict(os.environ, PYTHONPATH=ROOT)
    killed = subprocess.run([sys.executable, "-c", _KILL_AFTER_EPOCH_2, "distill", str(config), "--json"],
                            capture_output=True, text=True, env=env, timeout=600)
    assert killed.returncode == 9, killed.stderr[-3000:]
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    assert state == {"epoch": 2, "weights": "epoch_2.weights.h5"}
    assert len(json.loads((tmp_path / "run" / "history.json").read_text())["loss"]) == 2

    resumed = subprocess.run([sys.executable, "-m", "keras_kd.cli", "distill", str(config), "--json"],
                             capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout)
    assert summary["resumed_from_epoch"] == 2
    history = summary["history"]
    assert history["temperature"] == pytest.approx([5.0, 4.0, 3.0, 2.0])
    assert history["alpha"] == pytest.approx([0.7, 0.6, 0.5, 0.4])
    assert len(history["loss"]) == 4
    assert summary["optimizer_iterations"] == 4 * 4  # 128 samples / 32 per step, 4 epochs: the state came back
    assert not (tmp_path / "run" / "checkpoint").exists()  # the student is saved: the checkpoint is gone
    assert main(["report", str(tmp_path / "run")]) == 0


@pytest.mark.slow
def test_cli_output_is_the_products_own_lines_unless_verbose(tmp_path):
    from keras_kd.backend import keras

    keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)]).save(tmp_path / "m.keras")
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    command = [sys.executable, "-m", "keras_kd.cli", "export", str(tmp_path / "m.keras"), "--quantization", "none"]
    quiet = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert quiet.stderr == ""
    assert [line.split(" ")[0] for line in quiet.stdout.splitlines()] == ["wrote"]
    verbose = subprocess.run(command + ["--verbose"], capture_output=True, text=True, env=env, timeout=300)
    assert verbose.returncode == 0 and verbose.stderr != ""  # TensorFlow's own lines, shown on request


# --------------------------------------------------------------------------- every flag reaches its function
# One row per argument of each command: the argv that sets it to a value other than its default, the function
# it configures, and how that function's call shows the value. test_every_argument_has_a_row derives the
# arguments from the parser, so a new flag without a row fails.


class _Reached(Exception):
    """Stops `keras-kd distill` inside the distill call: the arguments are what the test reads."""


def _stub(**fields):
    import types

    return types.SimpleNamespace(to_dict=lambda: dict(fields), **fields)


@pytest.fixture
def calls(monkeypatch, tmp_path):
    """Replaces every function a command configures with a recorder; returns {name: (args, kwargs)}."""
    import types

    import keras_kd.benchmark
    import keras_kd.data
    import keras_kd.export
    import keras_kd.quickstart
    import keras_kd.report
    import keras_kd.schemes
    from keras_kd import cli

    recorded = {}

    def recorder(name, result=None):
        def record(*args, **kwargs):
            recorded[name] = (args, kwargs)
            if isinstance(result, Exception):
                raise result
            return result

        return record

    monkeypatch.setattr(keras_kd.quickstart, "run_quickstart",
                        recorder("run_quickstart", {"rows": [], "files": [], "elapsed_s": 0.0}))
    monkeypatch.setattr(keras_kd.export, "to_tflite", recorder("to_tflite", _stub(
        path="m.tflite", size_bytes=1, quantization="int8", op_counts={}, validation=None)))
    for name in ("benchmark_tflite", "benchmark_android"):
        monkeypatch.setattr(keras_kd.benchmark, name, recorder(name, _stub(p50_ms=1.0)))
    monkeypatch.setattr(keras_kd.report, "load_report", recorder("load_report", {"rows": [], "title": "t"}))
    monkeypatch.setattr(keras_kd.report, "render_markdown", lambda rows, title=None: "")
    monkeypatch.setattr(keras_kd.schemes, "distill", recorder("distill", _Reached()))
    import keras_kd.control

    monkeypatch.setattr(keras_kd.control, "compare_with_control", recorder("compare_with_control", _stub(errors={})))
    real_load_model = cli._load_model
    # compare's teacher must be a .keras path; the empty placeholder file stands for a trained model
    monkeypatch.setattr(cli, "_load_model", lambda spec, what: None if spec == "m.keras" else
                        real_load_model(spec, what))
    x = np.zeros((4, 3), "float32")
    y = np.zeros(4, "int32")
    monkeypatch.setattr(keras_kd.data, "load_dataset", recorder("load_dataset", types.SimpleNamespace(
        x_train=x, y_train=y, x_test=x, y_test=y)))
    real_strategy, real_run_callbacks = cli._strategy, cli._run_callbacks
    monkeypatch.setattr(cli, "_strategy", lambda name: recorder("_strategy")(name) or real_strategy("default"))
    monkeypatch.setattr(cli, "_run_callbacks", lambda *args: recorder("_run_callbacks")(*args) or
                        real_run_callbacks(*args))
    from keras_kd.backend import keras

    monkeypatch.setattr(keras.mixed_precision, "set_global_policy", recorder("set_global_policy"))

    class Hiding(cli._ProductOutputOnly):
        def __enter__(self):
            recorded["_ProductOutputOnly"] = ((), {})
            return super().__enter__()

    monkeypatch.setattr(cli, "_ProductOutputOnly", Hiding)
    model = tmp_path / "m.keras"
    model.write_text("")
    np.save(tmp_path / "cal.npy", np.ones((2, 3), "float32"))
    np.savez(tmp_path / "val.npz", x=np.ones((2, 3), "float32"), y=np.ones(2, "int32"))
    (tmp_path / "m.tflite").write_bytes(b"")
    (tmp_path / "run_dir").mkdir()
    (tmp_path / "run_dir" / "report.json").write_text("{}")
    (tmp_path / "run.yaml").write_text(f"teacher: {json.dumps(MODEL)}\nstudent: {json.dumps(MODEL)}\n"
                                        f"output: {tmp_path / 'run'}\n")
    (tmp_path / "compare.yaml").write_text(f"teacher: m.keras\nstudent: {json.dumps(MODEL)}\n")
    monkeypatch.chdir(tmp_path)
    return recorded


def _kwarg(target, key):
    return lambda calls: calls[target][1][key]


def _arg(target, index):
    return lambda calls: calls[target][0][index]


# The arguments each command is run with, besides the one under test.
BASE_ARGV = {"quickstart": [], "distill": ["run.yaml"], "compare": ["compare.yaml"], "export": ["m.keras", "--calibration", "cal.npy"],
             "benchmark": ["m.tflite"], "report": ["run_dir"]}

FLAGS = {
    "quickstart": {
        "--dataset": (["--dataset", "digits"], _kwarg("run_quickstart", "dataset"), "digits"),
        "--out": (["--out", "elsewhere"], _kwarg("run_quickstart", "out_dir"), "elsewhere"),
        "--teacher-epochs": (["--teacher-epochs", "2"], _kwarg("run_quickstart", "teacher_epochs"), 2),
        "--epochs": (["--epochs", "3"], _kwarg("run_quickstart", "epochs"), 3),
        "--qat-epochs": (["--qat-epochs", "4"], _kwarg("run_quickstart", "qat_epochs"), 4),
        "--limit": (["--limit", "50"], _kwarg("run_quickstart", "limit"), 50),
        "--seed": (["--seed", "7"], _kwarg("run_quickstart", "seed"), 7),
        "--progress": (["--progress"], _kwarg("run_quickstart", "verbose"), 1),
        "--json": (["--json"], _kwarg("run_quickstart", "quiet"), True),
    },
    "distill": {
        "config": ([], lambda calls: calls["load_dataset"][0][0], "mnist5k"),  # the config's default dataset
        "--strategy": (["--strategy", "mirrored"], _arg("_strategy", 0), "mirrored"),
        "--mixed-precision": (["--mixed-precision"], _arg("set_global_policy", 0), "mixed_bfloat16"),
        "--output": (["--output", "other"], _arg("_run_callbacks", 0), "other"),
        "--restart": (["--restart"], _arg("_run_callbacks", 1), 0),  # the checkpoint below is not resumed
        "--json": (["--json"], _kwarg("distill", "verbose"), 0),
    },
    "compare": {
        "config": ([], lambda calls: calls["load_dataset"][0][0], "mnist5k"),  # the config's default dataset
        "--seeds": (["--seeds", "4", "5"], _kwarg("compare_with_control", "seeds"), [4, 5]),
        "--learning-rate": (["--learning-rate", "0.01"], _kwarg("compare_with_control", "learning_rate"), 0.01),
        "--json": (["--json"], _kwarg("compare_with_control", "verbose"), 0),
    },
    "export": {
        "model": ([], _arg("to_tflite", 0), "m.keras"),
        "--quantization": (["--quantization", "float16"], _kwarg("to_tflite", "quantization"), "float16"),
        "--calibration": ([], lambda calls: calls["to_tflite"][1]["representative_data"].tolist(), [[1.0] * 3] * 2),
        "--validation": (["--validation", "val.npz"],
                         lambda calls: calls["to_tflite"][1]["validation_data"][1].tolist(), [1, 1]),
        "--min-agreement": (["--min-agreement", "0.5"], _kwarg("to_tflite", "min_agreement"), 0.5),
        "--io-dtype": (["--io-dtype", "uint8"], _kwarg("to_tflite", "io_dtype"), "uint8"),
        "--allow-select-tf-ops": (["--allow-select-tf-ops"], _kwarg("to_tflite", "allow_select_tf_ops"), True),
        "--strip-names": (["--strip-names"], _kwarg("to_tflite", "strip_names"), True),
        "--batch-size": (["--batch-size", "1"], _kwarg("to_tflite", "batch_size"), 1),
        "--output": (["--output", "out.tflite"], _arg("to_tflite", 1), "out.tflite"),
        "--json": (["--json"], lambda calls: "to_tflite" in calls, True),
    },
    "benchmark": {
        "model": ([], _arg("benchmark_tflite", 0), "m.tflite"),
        "--threads": (["--threads", "3"], _kwarg("benchmark_tflite", "num_threads"), 3),
        "--runs": (["--runs", "9"], _kwarg("benchmark_tflite", "num_runs"), 9),
        "--warmup": (["--warmup", "2"], _kwarg("benchmark_tflite", "warmup_runs"), 2),
        "--no-xnnpack": (["--no-xnnpack"], _kwarg("benchmark_tflite", "use_xnnpack"), False),
        "--android": (["--android", "--benchmark-binary", "bm"], _arg("benchmark_android", 0), "m.tflite"),
        "--benchmark-binary": (["--android", "--benchmark-binary", "bm"],
                               _kwarg("benchmark_android", "benchmark_binary"), "bm"),
        "--adb": (["--android", "--benchmark-binary", "bm", "--adb", "myadb"], _kwarg("benchmark_android", "adb"),
                  "myadb"),
        "--serial": (["--android", "--benchmark-binary", "bm", "--serial", "S1"],
                     _kwarg("benchmark_android", "serial"), "S1"),
        "--cpu-mask": (["--android", "--benchmark-binary", "bm", "--cpu-mask", "f0"],
                       _kwarg("benchmark_android", "cpu_mask"), "f0"),
        "--use-gpu": (["--android", "--benchmark-binary", "bm", "--use-gpu"], _kwarg("benchmark_android", "use_gpu"),
                      True),
        "--use-nnapi": (["--android", "--benchmark-binary", "bm", "--use-nnapi"],
                        _kwarg("benchmark_android", "use_nnapi"), True),
        "--json": (["--json"], lambda calls: "benchmark_tflite" in calls, True),
    },
    "report": {
        "run_dir": ([], _arg("load_report", 0), "run_dir"),
        "--json": (["--json"], lambda calls: "load_report" in calls, True),
    },
}
# --verbose is common to every command: it turns off the hiding of TensorFlow's own log lines.
COMMON = {"--verbose"}


def _arguments(parser):
    return {(action.option_strings[-1] if action.option_strings else action.dest) for action in parser._actions
            if action.dest != "help"}


def test_every_argument_has_a_row():
    for command, parser in _subcommands().items():
        assert _arguments(parser) == set(FLAGS[command]) | COMMON, command


@pytest.mark.parametrize("command, flag", [(c, f) for c in sorted(FLAGS) for f in sorted(FLAGS[c])])
def test_every_argument_reaches_the_function_it_configures(command, flag, calls, tmp_path, capsys):
    argv, read, expected = FLAGS[command][flag]
    if flag == "--restart":
        checkpoint = tmp_path / "run" / "checkpoint"
        checkpoint.mkdir(parents=True)
        (checkpoint / "state.json").write_text('{"epoch": 1, "weights": "missing.weights.h5"}')
    code = main([command, *BASE_ARGV[command], *argv])
    assert code == (1 if command == "distill" else 0), capsys.readouterr().err  # distill stops in the fake
    assert read(calls) == expected
    if flag == "--json":
        out = capsys.readouterr().out
        assert command == "distill" or json.loads(out) is not None


@pytest.mark.parametrize("flag, hidden", [([], True), (["--verbose"], False)])
def test_verbose_turns_off_the_hiding_of_tensorflows_lines(flag, hidden, calls):
    assert main(["report", "run_dir", *flag]) == 0
    assert ("_ProductOutputOnly" in calls) == hidden


# The config keys that are distill's own parameters arrive there as the config gives them.
CONFIG_VALUES = {"epochs": 3, "batch_size": 16, "alpha": 0.3, "temperature": 2.5,
                 "distillation_losses": "soft_target_kl", "distillation_loss_weights": 0.5,
                 "teacher_dtype": "bfloat16", "optimizer": "sgd", "mixing": "cutmix"}


@pytest.fixture
def distill_parameters():
    import inspect

    from keras_kd.schemes import distill

    return set(inspect.signature(distill).parameters)


def test_every_config_key_that_distill_takes_reaches_it(distill_parameters, calls, tmp_path):
    from keras_kd.cli import DISTILL_CONFIG

    parameters = distill_parameters  # read before `calls` replaces distill
    assert {key.name for key in DISTILL_CONFIG} & parameters == set(CONFIG_VALUES) | {"teacher", "student", "augment"}
    config = tmp_path / "keys.yaml"
    config.write_text((tmp_path / "run.yaml").read_text() + "".join(f"{k}: {v}\n" for k, v in CONFIG_VALUES.items())
                      + "augment: [{class_name: RandomFlip, config: {mode: horizontal}}]\n")
    assert main(["distill", str(config)]) == 1
    (teacher, student, _), kwargs = calls["distill"]
    assert teacher.name == student.name == MODEL["config"]["name"]  # built from the config's Keras configs
    for key, value in CONFIG_VALUES.items():
        arrived = type(kwargs[key]).__name__.lower() if key == "optimizer" else kwargs[key]
        assert arrived == value, key
    assert type(kwargs["augment"]).__name__ == "RandomFlip" and kwargs["augment"].mode == "horizontal"


def _digits_teacher_and_config(tmp_path, **overrides):
    from keras_kd.backend import keras

    teacher = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"),
                                keras.layers.Dense(10)], name="t")
    teacher.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.save(tmp_path / "teacher.keras")
    student = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)], name="s")
    config = {"teacher": str(tmp_path / "teacher.keras"), "student": keras.saving.serialize_keras_object(student),
              "dataset": "digits", "limit": 200, "epochs": 1, "batch_size": 50, "alpha": 0.9, "temperature": 4,
              "augment": [{"class_name": "RandomTranslation", "config": {"height_factor": 0.1, "width_factor": 0.1}}],
              "mixing": "mixup", "schedules": {"temperature": 3}}
    config.update(overrides)
    path = tmp_path / "compare.json"
    path.write_text(json.dumps(config))
    return str(path)


def test_compare_reports_the_control_and_the_distilled_student(tmp_path, capsys):
    config = _digits_teacher_and_config(tmp_path)
    assert main(["compare", config, "--seeds", "0", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report["variants"]) == ["control", "distilled"]
    assert all(len(row["errors"]) == 2 for row in report["variants"].values())
    assert report["seeds"] == [0, 1] and report["epochs"] == 1


@pytest.mark.parametrize("overrides, args, message", [
    ({"qat": True}, [], "compare measures float distillation"),
    ({"teacher": MODEL}, [], "compare needs a trained teacher"),
    ({}, ["--seeds", "0"], "give at least 2 seeds"),
    ({"augment": [{"class_name": "RandomNothing", "config": {}}]}, [], "augment: cannot build the layer 'RandomNothing'"),
    ({"mixing": "blend"}, [], "mixing: "),
])
def test_compare_refuses_bad_settings(tmp_path, capsys, overrides, args, message):
    config = _digits_teacher_and_config(tmp_path, **overrides)
    assert main(["compare", config, *args]) == 2
    assert message in capsys.readouterr().err
