"""Distillation losses: each a pure function plus a serializable `keras.losses.Loss`.

`__all__` is the whole public surface; `tests/test_losses.py` pins it.
"""

from keras_kd.losses.base import DistillationLoss, get, register_loss, registered_names, serialize
from keras_kd.losses.response import SoftTargetKLDivergence, soft_target_kl_divergence

__all__ = [
    "DistillationLoss",
    "SoftTargetKLDivergence",
    "get",
    "register_loss",
    "registered_names",
    "serialize",
    "soft_target_kl_divergence",
]
