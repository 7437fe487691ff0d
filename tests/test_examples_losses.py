"""The loss-zoo examples run end to end at a small size (slow: they train several models)."""

import importlib.util
import pathlib

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_feature_distillation_example(capsys):
    example = _load("feature_distillation")
    results = example.main(["--epochs", "1", "--teacher-epochs", "3", "--limit", "300", "--batch-size", "32",
                            "--seeds", "0", "1"])
    assert list(results) == ["teacher", "control", "logit KD", "logit + feature KD"]
    assert all(0.0 <= v <= 1.0 for v in results.values())
    assert results["teacher"] > 0.5  # the teacher learned something worth distilling
    out = capsys.readouterr().out
    assert "gap closed" in out and "logit + feature KD" in out
    assert "than the spread over seeds" in out


@pytest.mark.slow
def test_token_distillation_example(capsys):
    example = _load("token_distillation")
    results = example.main(["--epochs", "3", "--teacher-epochs", "4", "--train-sequences", "400",
                            "--student-sequences", "100", "--max-length", "16"])
    assert list(results) == ["teacher", "student scratch", "student token KD"]
    assert results["teacher"] > 0.3  # well above 1/11 chance: it learned the grammar
    out = capsys.readouterr().out
    assert "grammar oracle" in out and "nan" not in out
