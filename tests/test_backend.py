"""keras_kd.backend: the one module that picks the Keras, and the two steps that differ between generations."""

import os
import subprocess
import sys

import numpy as np
import pytest

from keras_kd import backend
from keras_kd.backend import LEGACY_KERAS, apply_gradients, keras, keras_version, scale_loss, tf

pytestmark = pytest.mark.legacy_keras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_environment_variable_picks_the_keras():
    assert LEGACY_KERAS == (os.environ.get("TF_USE_LEGACY_KERAS", "0").strip().lower() in ("1", "true", "yes", "on"))
    assert keras.__name__ == ("tf_keras" if LEGACY_KERAS else "keras")
    assert keras_version() == keras.__version__ and keras_version().startswith("2." if LEGACY_KERAS else "3.")
    assert backend.tf is tf is sys.modules["tensorflow"]


def test_another_keras_3_backend_is_refused_with_the_fix():
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_USE_LEGACY_KERAS", None)
    # Another backend's own package (jax, torch) need not be installed here: the check reads keras.backend.backend().
    code = "import keras; keras.backend.backend = lambda: 'jax'; import keras_kd.backend"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert completed.returncode != 0
    assert "KERAS_BACKEND is 'jax'" in completed.stderr and "Set KERAS_BACKEND=tensorflow" in completed.stderr


def _loss_scale_optimizer(inner):
    if LEGACY_KERAS:
        return keras.mixed_precision.LossScaleOptimizer(inner, dynamic=False, initial_scale=1024.0)
    return keras.optimizers.LossScaleOptimizer(inner, initial_scale=1024.0)


def test_scale_loss_scales_only_under_a_loss_scale_optimizer():
    loss = tf.constant(0.5)
    assert scale_loss(None, loss) is loss
    assert float(scale_loss(keras.optimizers.SGD(1.0), loss)) == 0.5
    assert float(scale_loss(_loss_scale_optimizer(keras.optimizers.SGD(1.0)), loss)) == 0.5 * 1024.0


@pytest.mark.parametrize("loss_scaled", [False, True])
def test_apply_gradients_unscales_and_skips_variables_without_a_gradient(loss_scaled):
    used = tf.Variable([1.0, 2.0])
    unused = tf.Variable([3.0])  # as a feature adapter no active loss reads
    optimizer = keras.optimizers.SGD(0.25)
    if loss_scaled:
        optimizer = _loss_scale_optimizer(optimizer)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(used * used)
        scaled = scale_loss(optimizer, loss)
    gradients = tape.gradient(scaled, [used, unused])
    assert gradients[1] is None
    apply_gradients(optimizer, gradients, [used, unused])
    # d(sum(v^2))/dv = 2v, unscaled: 1 - 0.25 * 2 = 0.5 and 2 - 0.25 * 4 = 1
    np.testing.assert_array_equal(used.numpy(), [0.5, 1.0])
    np.testing.assert_array_equal(unused.numpy(), [3.0])
