"""The one place that decides which Keras keras_kd uses.

Keras 3 is the default. Setting the environment variable
`TF_USE_LEGACY_KERAS=1` (the switch TensorFlow itself reads) selects
`tf_keras` (Keras 2), which is what tensorflow-model-optimization needs.
Every other module of keras_kd does `from keras_kd.backend import keras, tf`.

The few places where the two Keras generations differ in API (loss scaling
under mixed precision, the optimizer step) are wrapped here so the rest of
the code reads the same under both.
"""

import os

import tensorflow as tf

_LEGACY_VALUES = ("1", "true", "yes", "on")

#: True when keras_kd runs on tf_keras (Keras 2) rather than Keras 3.
LEGACY_KERAS = os.environ.get("TF_USE_LEGACY_KERAS", "0").strip().lower() in _LEGACY_VALUES

if LEGACY_KERAS:
    try:
        import tf_keras as keras  # noqa: F401  (re-exported)
    except ImportError as error:  # pragma: no cover - depends on the machine
        raise ImportError(
            "TF_USE_LEGACY_KERAS=1 asks for tf_keras (Keras 2), which is not installed. "
            "Install it with `pip install keras-kd[qat]` or unset TF_USE_LEGACY_KERAS to use Keras 3."
        ) from error
else:
    import keras  # noqa: F401  (re-exported)

    if keras.backend.backend() != "tensorflow":
        raise ImportError(
            f"keras_kd needs the TensorFlow backend of Keras 3 (it trains with tf.GradientTape and "
            f"exports with the TFLite converter), but KERAS_BACKEND is {keras.backend.backend()!r}. "
            "Set KERAS_BACKEND=tensorflow before importing keras."
        )

__all__ = ["keras", "tf", "LEGACY_KERAS", "scale_loss", "apply_gradients", "keras_version"]


def keras_version():
    """Returns the version string of the Keras in use (e.g. "3.15.1" or "2.21.0")."""
    return keras.__version__


def _is_legacy_loss_scale_optimizer(optimizer):
    return LEGACY_KERAS and isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer)


def scale_loss(optimizer, loss):
    """Scales `loss` for mixed-precision training; call it inside the GradientTape.

    Keras 3 optimizers expose `scale_loss` (the identity unless the optimizer is
    a `LossScaleOptimizer`); tf_keras uses `get_scaled_loss` on its
    `LossScaleOptimizer` only.
    """
    if optimizer is None:
        return loss
    if LEGACY_KERAS:
        if _is_legacy_loss_scale_optimizer(optimizer):
            return optimizer.get_scaled_loss(loss)
        return loss
    return optimizer.scale_loss(loss)


def apply_gradients(optimizer, gradients, variables):
    """Applies `gradients` of a loss scaled by `scale_loss` to `variables`.

    Variables with no gradient (for example a feature adapter that no active
    loss used) are skipped instead of failing the step.
    """
    if _is_legacy_loss_scale_optimizer(optimizer):
        gradients = optimizer.get_unscaled_gradients(gradients)
    pairs = [(g, v) for g, v in zip(gradients, variables) if g is not None]
    optimizer.apply_gradients(pairs)
