"""The public surface is pinned: adding or removing a name is a deliberate change here."""

import subprocess
import sys

import pytest

import keras_kd

pytestmark = pytest.mark.legacy_keras


def test_top_level_all_is_pinned():
    assert sorted(keras_kd.__all__) == sorted([
        "__version__", "backend", "benchmark", "callbacks", "data", "export", "interpreter", "losses",
        "quantization", "quickstart", "report", "schedules", "schemes", "Distiller", "cache_teacher_outputs",
        "TemperatureScheduler", "AlphaScheduler", "LossWeightScheduler", "load_dataset",
    ])


@pytest.mark.parametrize("name", [n for n in keras_kd.__all__ if n != "__version__"])
def test_every_public_name_resolves_and_is_documented(name):
    value = getattr(keras_kd, name)
    assert value.__doc__ and len(value.__doc__.strip()) > 20, name


def test_import_is_lazy():
    code = "import sys, keras_kd; print('tensorflow' in sys.modules, 'ai_edge_litert' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_export_reexports_the_callback():
    from keras_kd.callbacks import TFLiteEvalCallback as original
    from keras_kd.export import TFLiteEvalCallback

    assert TFLiteEvalCallback is original
