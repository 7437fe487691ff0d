"""Distillation losses: each a pure function plus a serializable `keras.losses.Loss`.

`__all__` is the whole public surface; `tests/test_losses.py` pins it.

| family | registered names |
| --- | --- |
| response | `soft_target_kl`, `reverse_kl`, `logit_mse`, `dkd`, `multi_teacher_kl` |
| regression / sequence | `regression_mse`, `token_kl` |
| feature | `fitnets`, `attention_transfer`, `cosine_alignment` |
| relation | `rkd_distance`, `rkd_angle`, `pkt`, `similarity_preserving` |
| information | `crd`, `vid` |
| gradient | `input_gradient` |
"""

from keras_kd.losses.base import DistillationLoss, get, register_loss, registered_names, serialize
from keras_kd.losses.feature import (
    AttentionTransfer,
    CosineAlignment,
    FitNetsHint,
    ProjectionAdapter,
    attention_map,
    attention_transfer,
    cosine_alignment,
    fitnets_hint,
)
from keras_kd.losses.gradient import InputGradientMatching, cross_entropy_input_gradient, input_gradient_distance
from keras_kd.losses.information import CRD, VID, CRDState, VIDState, crd_info_nce, vid_negative_log_likelihood
from keras_kd.losses.multi_teacher import MultiTeacherKLDivergence, multi_teacher_kl_divergence, stack_teachers
from keras_kd.losses.regression import RegressionDistillation, regression_distillation, regression_kd_objective
from keras_kd.losses.relation import (
    PKT,
    RKDAngle,
    RKDDistance,
    SimilarityPreserving,
    pkt,
    rkd_angle,
    rkd_distance,
    similarity_preserving,
)
from keras_kd.losses.response import (
    DecoupledKD,
    LogitMSE,
    ReverseKLDivergence,
    SoftTargetKLDivergence,
    decoupled_kd,
    logit_mse,
    reverse_kl_divergence,
    soft_target_kl_divergence,
)
from keras_kd.losses.sequence import TokenKLDivergence, padding_mask, token_kl_divergence

__all__ = [
    "AttentionTransfer",
    "CRD",
    "CRDState",
    "CosineAlignment",
    "DecoupledKD",
    "DistillationLoss",
    "FitNetsHint",
    "InputGradientMatching",
    "LogitMSE",
    "MultiTeacherKLDivergence",
    "PKT",
    "ProjectionAdapter",
    "RKDAngle",
    "RKDDistance",
    "RegressionDistillation",
    "ReverseKLDivergence",
    "SimilarityPreserving",
    "SoftTargetKLDivergence",
    "TokenKLDivergence",
    "VID",
    "VIDState",
    "attention_map",
    "attention_transfer",
    "cosine_alignment",
    "crd_info_nce",
    "cross_entropy_input_gradient",
    "decoupled_kd",
    "fitnets_hint",
    "get",
    "input_gradient_distance",
    "logit_mse",
    "multi_teacher_kl_divergence",
    "padding_mask",
    "pkt",
    "register_loss",
    "registered_names",
    "regression_distillation",
    "regression_kd_objective",
    "reverse_kl_divergence",
    "rkd_angle",
    "rkd_distance",
    "serialize",
    "similarity_preserving",
    "soft_target_kl_divergence",
    "stack_teachers",
    "token_kl_divergence",
    "vid_negative_log_likelihood",
]
