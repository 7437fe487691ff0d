"""Shared test setup: quiet TensorFlow, fixed seeds, two logical CPU devices.

Two logical CPU devices are configured before any test touches TensorFlow so
that `tf.distribute.MirroredStrategy` can be exercised for real on one CPU.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
except RuntimeError:  # already initialised by an earlier import; tests that need two devices skip
    pass

from keras_kd.backend import keras  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield
    keras.backend.clear_session()


def pytest_collection_modifyitems(config, items):
    """Under tf_keras only the tests marked `legacy_keras` run (the core that must work on both)."""
    from keras_kd.backend import LEGACY_KERAS

    if not LEGACY_KERAS:
        return
    skip = pytest.mark.skip(reason="Keras 3 only; this run is TF_USE_LEGACY_KERAS=1")
    for item in items:
        if "legacy_keras" not in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
