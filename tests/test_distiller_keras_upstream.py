"""Keras' own tests for `keras.distillation`, run unchanged against `keras_kd.Distiller`.

The Keras wheel ships `keras/src/distillation/distiller_test.py` and
`distillation_loss_test.py`. They are loaded from the installed Keras as they
are; the only change is the name `Distiller` in each module, which points to
`keras_kd.Distiller`. Everything they check (constructor and compile spelling,
`keras.distillation` loss objects kept as given, `total_loss` in the logs,
the feature extractors, `get_config` / `from_config`, saving and loading) holds
for keras_kd, so migrating is an import change. Their loss objects stay
Keras' own, so the deliberate fix (the soft-target KL for `"kl_divergence"`)
is what they train with here.
"""

import importlib.util
import os

import pytest

from keras_kd.backend import LEGACY_KERAS, keras
from keras_kd.distiller import Distiller

_UPSTREAM_TESTS = ("distiller_test", "distillation_loss_test")


def _upstream_dir():
    if LEGACY_KERAS:
        return None
    return os.path.join(os.path.dirname(keras.__file__), "src", "distillation")


def _load(name):
    directory = _upstream_dir()
    path = os.path.join(directory, f"{name}.py") if directory else None
    if path is None or not os.path.exists(path):
        return None
    spec = importlib.util.spec_from_file_location(f"keras_upstream_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.Distiller is keras.distillation.Distiller  # what is being replaced, and only that
    module.Distiller = Distiller
    return module


_distiller_tests = _load("distiller_test")
_loss_tests = _load("distillation_loss_test")

if _distiller_tests is None or _loss_tests is None:
    @pytest.mark.skip(reason="this Keras does not ship keras/src/distillation/*_test.py (Keras 3.12+ wheels do)")
    def test_upstream_keras_distillation_tests():
        pass
else:
    class TestUpstreamDistiller(_distiller_tests.TestDistiller):
        """keras/src/distillation/distiller_test.py::TestDistiller."""

    class TestUpstreamLogitsDistillation(_loss_tests.TestLogitsDistillation):
        """keras/src/distillation/distillation_loss_test.py::TestLogitsDistillation."""

    class TestUpstreamFeatureDistillation(_loss_tests.TestFeatureDistillation):
        """keras/src/distillation/distillation_loss_test.py::TestFeatureDistillation."""

    class TestUpstreamEndToEnd(_loss_tests.TestEndToEndDistillation):
        """keras/src/distillation/distillation_loss_test.py::TestEndToEndDistillation."""

    def test_every_upstream_test_class_is_run():
        """A new test class in a later Keras must be added above, not silently skipped."""
        upstream = {name for module in (_distiller_tests, _loss_tests) for name, value in vars(module).items()
                    if isinstance(value, type) and name.startswith("Test") and value.__module__ == module.__name__}
        ours = {cls.__mro__[1].__name__ for cls in (TestUpstreamDistiller, TestUpstreamLogitsDistillation,
                                                     TestUpstreamFeatureDistillation, TestUpstreamEndToEnd)}
        assert upstream == ours
