"""Feature-based distillation: losses between intermediate layers of the teacher and the student.

They name layers with `teacher_layer_name` / `student_layer_name`; the
Distiller reads those layers from one forward pass of each model. A learned
projection that bridges different channel counts is a `ProjectionAdapter`
returned from `create_state()`: the Distiller owns and trains it, and it is
never part of `distiller.student`.
"""

from keras_kd.backend import keras, tf
from keras_kd.losses._base import DistillationLoss, as_float32, describe, is_number, register_loss

__all__ = [
    "ProjectionAdapter",
    "fitnets_hint",
    "FitNetsHint",
    "attention_map",
    "attention_transfer",
    "AttentionTransfer",
    "cosine_alignment",
    "CosineAlignment",
]


@keras.saving.register_keras_serializable(package="keras_kd")
class ProjectionAdapter(keras.layers.Layer):
    """A learned linear map from student features to the teacher's channel count.

    A `Dense(units)` on the last axis for `(batch, C)` or `(batch, seq, C)`
    features, a 1x1 `Conv2D(units)` for `(batch, H, W, C)` feature maps. It
    computes in float32.

    Args:
        units: the teacher's channel count.
        rank: rank of the features, batch axis included.

    Example:

    >>> adapter = ProjectionAdapter(units=8, rank=4)
    >>> tuple(adapter(tf.zeros((2, 5, 5, 3))).shape)
    (2, 5, 5, 8)
    """

    def __init__(self, units, rank, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.units = int(units)
        self.rank = int(rank)
        if self.rank == 4:
            self.projection = keras.layers.Conv2D(self.units, 1, dtype="float32", name="projection")
        else:
            self.projection = keras.layers.Dense(self.units, dtype="float32", name="projection")

    def build(self, input_shape):
        self.projection.build(tuple(input_shape))
        self.built = True

    def call(self, inputs):
        return self.projection(as_float32(inputs))

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, rank=self.rank)
        return config


def _known(dim):
    return dim is not None


def _check_feature_shapes(loss, teacher_shape, student_shape, *, channels_may_differ, channels_adapter):
    """Shared construction-time check: same rank, same spatial/sequence size, channels as allowed."""
    name = type(loss).__name__
    teacher_shape, student_shape = tuple(teacher_shape), tuple(student_shape)
    if len(teacher_shape) != len(student_shape):
        raise ValueError(
            f"{name} compares features of the same rank, but the teacher layer {loss.teacher_layer_name!r} "
            f"gives {teacher_shape} and the student layer {loss.student_layer_name!r} gives {student_shape}. "
            "Pick layers of the same kind (both feature maps (batch, H, W, C) or both vectors (batch, C))."
        )
    for t_dim, s_dim in zip(teacher_shape[1:-1], student_shape[1:-1]):
        if _known(t_dim) and _known(s_dim) and t_dim != s_dim:
            raise ValueError(
                f"{name}: the teacher layer {loss.teacher_layer_name!r} gives {teacher_shape} and the student "
                f"layer {loss.student_layer_name!r} gives {student_shape}; their spatial (or sequence) sizes "
                f"differ, which a per-position projection cannot bridge. Pick layers whose sizes match, or "
                "add pooling/resizing to the student so they do."
            )
    t_channels, s_channels = teacher_shape[-1], student_shape[-1]
    if t_channels != s_channels and not channels_may_differ and not channels_adapter:
        raise ValueError(
            f"{name}: the teacher layer {loss.teacher_layer_name!r} has {t_channels} channels and the student "
            f"layer {loss.student_layer_name!r} has {s_channels}. Set use_adapter=True (a learned projection "
            "owned by the Distiller) or pick layers with equal channel counts."
        )


def _adapter_for(loss, teacher_shape, student_shape):
    if teacher_shape is None or student_shape is None:
        return None
    if not loss.use_adapter or tuple(teacher_shape)[-1] == tuple(student_shape)[-1]:
        return None
    adapter = ProjectionAdapter(tuple(teacher_shape)[-1], len(student_shape),
                                name=f"{loss.name}_adapter")
    adapter.build((None,) + tuple(student_shape)[1:])
    return adapter


def _reduce_features(values):
    """Per example for feature maps (batch, H, W, C); per position otherwise (the last axis is reduced)."""
    values = tf.reduce_mean(values, axis=-1)
    if len(values.shape) == 3:
        values = tf.reduce_mean(values, axis=[1, 2])
    return values


def fitnets_hint(teacher, student):
    """FitNets hint loss (Romero et al., 2015), per example (per position for sequences).

    `L = mean_j (h_t,j - r(h_s)_j)**2`

    where `r` is the learned regressor (`ProjectionAdapter`) when the channel
    counts differ, otherwise the identity. This function takes `r(h_s)`
    already projected; the mean runs over `H, W, C` for feature maps and over
    the last axis otherwise. (The paper writes `1/2 ||h_t - r(h_s)||**2`; the
    mean keeps the scale independent of the layer size.)

    Paper: A. Romero, N. Ballas, S. E. Kahou, A. Chassang, C. Gatta, Y. Bengio,
    "FitNets: Hints for Thin Deep Nets", ICLR 2015.

    Args:
        teacher: teacher features `(batch, ..., C)`.
        student: (projected) student features of the same shape.

    Returns:
        A float32 tensor: `(batch,)` for rank 2 and 4, `(batch, seq)` for rank 3.

    Example:

    >>> import numpy as np
    >>> float(fitnets_hint(np.ones((1, 2, 2, 1)), np.zeros((1, 2, 2, 1)))[0])
    1.0
    """
    return _reduce_features(tf.square(as_float32(teacher) - as_float32(student)))


class _AdaptedFeatureLoss(DistillationLoss):
    """Shared parts of feature losses that can own a projection adapter."""

    def __init__(self, teacher_layer_name=None, student_layer_name=None, use_adapter=True, name=None,
                 reduction="sum_over_batch_size"):
        super().__init__(teacher_layer_name=teacher_layer_name, student_layer_name=student_layer_name, name=name,
                         reduction=reduction)
        self.use_adapter = bool(use_adapter)

    def validate_shapes(self, teacher_shape, student_shape):
        if teacher_shape is None or student_shape is None:
            return
        _check_feature_shapes(self, teacher_shape, student_shape, channels_may_differ=False,
                              channels_adapter=self.use_adapter)

    def create_state(self, teacher_shape, student_shape):
        return _adapter_for(self, teacher_shape, student_shape)

    def _project(self, student, state):
        return state(student) if state is not None else as_float32(student)

    def get_config(self):
        config = super().get_config()
        config.update(use_adapter=self.use_adapter)
        return config


@register_loss("fitnets")
class FitNetsHint(_AdaptedFeatureLoss):
    """FitNets hints: regress a teacher layer from a student layer (Romero et al., ICLR 2015).

    `L = mean_j (h_t,j - r(h_s)_j)**2` (see `fitnets_hint`). When the channel
    counts differ, `r` is a Dense (vectors) or 1x1 Conv2D (feature maps)
    `ProjectionAdapter` created by `create_state()`, owned and trained by the
    Distiller, and absent from `distiller.student` and its export. Spatial
    sizes must match (checked when the Distiller is built).

    Args:
        teacher_layer_name: name of the teacher's hint layer (required).
        student_layer_name: name of the student's guided layer (required).
        use_adapter: learn a projection when channel counts differ (default);
            False makes a channel mismatch an error.
        name: name in logs.

    Example:

    ```python
    hint = FitNetsHint(teacher_layer_name="t_conv2", student_layer_name="s_conv3")
    distiller = keras_kd.Distiller(teacher, student, distillation_losses=["soft_target_kl", hint],
                                   distillation_loss_weights=[1.0, 0.5])
    ```
    """

    function = staticmethod(fitnets_hint)

    def __init__(self, teacher_layer_name=None, student_layer_name=None, use_adapter=True, name="fitnets",
                 reduction="sum_over_batch_size"):
        super().__init__(teacher_layer_name, student_layer_name, use_adapter, name, reduction)

    def compute(self, teacher, student, state=None, **context):
        return fitnets_hint(teacher, self._project(student, state))


def attention_map(features, p=2.0):
    """Spatial attention map of Zagoruyko & Komodakis: `normalize(flatten(mean_c |A_c|**p))`.

    Args:
        features: `(batch, H, W, C)` activations.
        p: the power (the paper uses 2).

    Returns:
        `(batch, H * W)`, each row of unit L2 norm.

    Example:

    >>> import numpy as np
    >>> [round(float(v), 4) for v in attention_map(np.ones((1, 1, 2, 3)))[0]]
    [0.7071, 0.7071]
    """
    features = as_float32(features)
    if len(features.shape) != 4:
        raise ValueError(
            f"Attention transfer needs feature maps of shape (batch, H, W, C), got shape {tuple(features.shape)}."
        )
    maps = tf.reduce_mean(tf.pow(tf.abs(features), p), axis=-1)
    maps = tf.reshape(maps, (tf.shape(maps)[0], -1))
    return tf.math.l2_normalize(maps, axis=-1)


def attention_transfer(teacher, student, p=2.0):
    """Attention transfer (Zagoruyko & Komodakis, ICLR 2017), per example.

    With `Q = flatten(mean_c |A_c|**p)` (the paper sums over channels; the
    normalisation makes sum and mean equal):

    `L = mean_k (Q_s,k / ||Q_s||_2 - Q_t,k / ||Q_t||_2)**2`

    the mean over the `H * W` positions, as in the authors' code. The paper's
    weight `beta / 2` (beta = 1000) belongs in the Distiller's
    `distillation_loss_weights`. Channel counts may differ; the spatial sizes
    must match.

    Paper: S. Zagoruyko, N. Komodakis, "Paying More Attention to Attention:
    Improving the Performance of Convolutional Neural Networks via Attention
    Transfer", ICLR 2017.

    Args:
        teacher: teacher feature maps `(batch, H, W, C_t)`.
        student: student feature maps `(batch, H, W, C_s)`.
        p: the power of the attention map.

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:

    >>> import numpy as np
    >>> t = np.zeros((1, 1, 2, 1)); t[0, 0, 0] = 1.0; s = np.ones((1, 1, 2, 4))
    >>> round(float(attention_transfer(t, s)[0]), 4)
    0.2929
    """
    return tf.reduce_mean(tf.square(attention_map(student, p) - attention_map(teacher, p)), axis=-1)


@register_loss("attention_transfer")
class AttentionTransfer(DistillationLoss):
    """Attention transfer between feature maps (Zagoruyko & Komodakis, ICLR 2017).

    See `attention_transfer` for the formula. Needs `(batch, H, W, C)` layers
    of equal `H, W` (channels may differ; no adapter is needed).

    Args:
        teacher_layer_name: teacher feature-map layer.
        student_layer_name: student feature-map layer.
        p: the power in `|A|**p` (paper: 2).
        name: name in logs.

    Example:

    ```python
    at = AttentionTransfer("t_block2", "s_block3")
    distiller = keras_kd.Distiller(teacher, student, distillation_losses=["soft_target_kl", at],
                                   distillation_loss_weights=[1.0, 500.0])
    ```
    """

    function = staticmethod(attention_transfer)

    def __init__(self, teacher_layer_name=None, student_layer_name=None, p=2.0, name="attention_transfer",
                 reduction="sum_over_batch_size"):
        super().__init__(teacher_layer_name=teacher_layer_name, student_layer_name=student_layer_name, name=name,
                         reduction=reduction)
        if not is_number(p) or not p > 0:
            raise ValueError(f"AttentionTransfer p must be a number > 0, got {describe(p)} (the paper uses 2).")
        self.p = float(p)

    def validate_shapes(self, teacher_shape, student_shape):
        if teacher_shape is None or student_shape is None:
            return
        for role, shape in (("teacher", teacher_shape), ("student", student_shape)):
            if len(tuple(shape)) != 4:
                raise ValueError(
                    f"AttentionTransfer needs feature maps of shape (batch, H, W, C), but the {role} layer gives "
                    f"{tuple(shape)}. Pick convolutional layers (teacher_layer_name={self.teacher_layer_name!r}, "
                    f"student_layer_name={self.student_layer_name!r})."
                )
        _check_feature_shapes(self, teacher_shape, student_shape, channels_may_differ=True, channels_adapter=False)

    def compute(self, teacher, student, **context):
        return attention_transfer(teacher, student, self.p)

    def get_config(self):
        config = super().get_config()
        config.update(p=self.p)
        return config


def cosine_alignment(teacher, student):
    """Cosine hidden-state alignment (DistilBERT's cosine embedding loss), per position.

    `L = 1 - <h_t, h_s> / (||h_t|| ||h_s||)` along the last axis, averaged
    over `H, W` for feature maps. For `(batch, seq, d)` hidden states it gives
    one value per token, so the Distiller's padding mask applies.

    Paper: V. Sanh, L. Debut, J. Chaumond, T. Wolf, "DistilBERT, a distilled
    version of BERT: smaller, faster, cheaper and lighter", 2019.

    Args:
        teacher: teacher hidden states `(..., d)`.
        student: (projected) student hidden states, same shape.

    Returns:
        A float32 tensor: `(batch,)` for rank 2 and 4, `(batch, seq)` for rank 3.

    Example:

    >>> import numpy as np
    >>> round(float(cosine_alignment(np.array([[1.0, 0.0]]), np.array([[1.0, 1.0]]))[0]), 4)
    0.2929
    """
    teacher = tf.math.l2_normalize(as_float32(teacher), axis=-1)
    student = tf.math.l2_normalize(as_float32(student), axis=-1)
    values = 1.0 - tf.reduce_sum(teacher * student, axis=-1)
    if len(values.shape) == 3:
        values = tf.reduce_mean(values, axis=[1, 2])
    return values


@register_loss("cosine_alignment")
class CosineAlignment(_AdaptedFeatureLoss):
    """Aligns the direction of hidden states: `1 - cos(h_t, r(h_s))` (DistilBERT, Sanh et al., 2019).

    See `cosine_alignment`. When the widths differ, `r` is a learned
    `ProjectionAdapter` owned by the Distiller (as for `FitNetsHint`).

    Args:
        teacher_layer_name: teacher hidden-state layer.
        student_layer_name: student hidden-state layer.
        use_adapter: learn a projection when widths differ.
        name: name in logs.

    Example:

    ```python
    align = CosineAlignment("teacher_block_4", "student_block_2")
    ```
    """

    function = staticmethod(cosine_alignment)

    def __init__(self, teacher_layer_name=None, student_layer_name=None, use_adapter=True, name="cosine_alignment",
                 reduction="sum_over_batch_size"):
        super().__init__(teacher_layer_name, student_layer_name, use_adapter, name, reduction)

    def compute(self, teacher, student, state=None, **context):
        return cosine_alignment(teacher, self._project(student, state))
