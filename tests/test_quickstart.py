"""keras_kd.quickstart: the recipes train through keras_kd.schemes.distill; bad lengths fail before training.

The whole pipeline runs end to end in tests/test_cli.py (`keras-kd quickstart`, slow).
"""

import pytest

from keras_kd import quickstart


@pytest.fixture
def calls(monkeypatch):
    recorded = []

    def fake_distill(teacher, student, data, **kwargs):
        recorded.append((teacher, student, data, kwargs))
        return "history"

    monkeypatch.setattr(quickstart, "distill", fake_distill)
    return recorded


def _float_learning_rate(optimizer):
    return float(optimizer.learning_rate.numpy() if hasattr(optimizer.learning_rate, "numpy")
                 else optimizer.learning_rate)


def test_curriculum_distill_is_schemes_distill_with_a_falling_temperature_and_alpha(calls):
    from keras_kd.callbacks import AlphaScheduler, TemperatureScheduler

    assert quickstart.curriculum_distill("t", "s", "x", "y", epochs=5, learning_rate=2e-3, verbose=2,
                                         validation_data="v") == "history"
    (teacher, student, data, kwargs), = calls
    assert (teacher, student, data) == ("t", "s", ("x", "y"))
    assert kwargs["epochs"] == 5 and kwargs["batch_size"] == quickstart.BATCH_SIZE
    assert (kwargs["alpha"], kwargs["temperature"]) == (0.9, 6.0)
    assert kwargs["verbose"] == 2 and kwargs["validation_data"] == "v" and kwargs["metrics"] == ["accuracy"]
    assert _float_learning_rate(kwargs["optimizer"]) == pytest.approx(2e-3)
    temperature, alpha = kwargs["callbacks"]
    assert isinstance(temperature, TemperatureScheduler) and isinstance(alpha, AlphaScheduler)
    assert [temperature.schedule(step) for step in range(5)] == pytest.approx([6.0, 5.0, 4.0, 3.0, 2.0])
    assert [alpha.schedule(step) for step in range(5)] == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5])


def test_qat_distill_refuses_a_float_student_and_fine_tunes_a_qat_one(calls):
    from keras_kd.quantization import quantize_model

    student = quickstart.build_student((8, 8, 1), 3, width=4, hidden=8)
    with pytest.raises(ValueError, match="has no fake quantization; pass quantize_model\\(student\\)"):
        quickstart.qat_distill("t", student, "x", "y", epochs=1)
    assert not calls
    qat_student = quantize_model(student)
    quickstart.qat_distill("t", qat_student, "x", "y", epochs=2)
    (_, distilled, _, kwargs), = calls
    assert distilled is qat_student
    assert (kwargs["alpha"], kwargs["temperature"], kwargs["epochs"]) == (0.5, 2.0, 2)
    assert _float_learning_rate(kwargs["optimizer"]) == pytest.approx(1e-4)


@pytest.mark.parametrize("name, value", [("teacher_epochs", 0), ("epochs", 1.5), ("qat_epochs", -1)])
def test_run_quickstart_checks_the_lengths_before_anything_runs(name, value, tmp_path, monkeypatch):
    monkeypatch.setattr("keras_kd.data.load_dataset", lambda *a, **k: pytest.fail("data loaded before checks"))
    with pytest.raises(ValueError, match=f"{name} must be a positive integer, got {value!r}"):
        quickstart.run_quickstart(out_dir=str(tmp_path / "run"), **{name: value})
    assert not (tmp_path / "run").exists()


def test_the_models_are_the_documented_sizes():
    teacher, student = quickstart.build_teacher(), quickstart.build_student()
    assert teacher.count_params() > 800_000 and student.count_params() < 250_000
    assert teacher.output_shape == student.output_shape == (None, 10)
