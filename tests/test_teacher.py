"""TeacherRunner: the one place the teacher runs (Distiller steps and the cache)."""

import numpy as np
import pytest

from keras_kd.backend import keras, tf
from keras_kd.distiller import Distiller
from keras_kd.losses import FitNetsHint, SoftTargetKLDivergence
from keras_kd.teacher import FINAL_OUTPUT, TeacherRunner
from tests.helpers import mlp, toy_data

pytestmark = pytest.mark.legacy_keras


def test_runs_the_teacher_in_float32_without_gradient():
    x, _ = toy_data()
    teacher = mlp(seed=7)
    outputs = TeacherRunner(teacher)(tf.constant(x))
    assert set(outputs) == {FINAL_OUTPUT} and outputs[FINAL_OUTPUT].dtype == tf.float32
    np.testing.assert_allclose(outputs[FINAL_OUTPUT].numpy(), teacher.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_taps_come_from_the_same_pass_and_are_the_distillers():
    x, _ = toy_data()
    teacher = mlp(seed=7, hidden_name="hidden")
    runner = TeacherRunner(teacher, ["hidden"])
    outputs = runner(tf.constant(x))
    assert set(outputs) == {FINAL_OUTPUT, "hidden"} and runner.output_shapes["hidden"] == (None, 16)
    distiller = Distiller(teacher, mlp(seed=3, hidden_name="hidden"),
                          distillation_losses=[SoftTargetKLDivergence(), FitNetsHint("hidden", "hidden")])
    assert distiller.teacher_runner.layer_names == ["hidden"]
    np.testing.assert_allclose(distiller.teacher_runner(tf.constant(x))["hidden"], outputs["hidden"], rtol=1e-6)


def test_refuses_an_unbuilt_teacher_and_an_unknown_dtype():
    unbuilt = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="is not built .* random weights"):
        TeacherRunner(unbuilt)(tf.zeros((2, 8)))
    with pytest.raises(ValueError, match="teacher_dtype must be None, 'bfloat16' or 'float16', got 'int8'"):
        TeacherRunner(mlp(), dtype="int8")
