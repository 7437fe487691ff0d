"""Information-theoretic distillation: contrastive (CRD) and variational (VID) objectives.

Both own state through `create_state()`: embedding heads and a memory bank
for CRD, a mean regressor and per-channel variances for VID. The Distiller
trains the trainable parts with the student and keeps them out of
`distiller.student`.
"""

import math

from keras_kd.backend import keras, tf
from keras_kd.losses._base import DistillationLoss, as_float32, register_loss
from keras_kd.losses._feature import _check_feature_shapes

# CRDState and VIDState are the layers the losses create for the Distiller to own: internals, out of __all__.
__all__ = [
    "crd_info_nce",
    "CRD",
    "vid_negative_log_likelihood",
    "VID",
]


def _flatten(x):
    x = as_float32(x)
    return x if len(x.shape) == 2 else tf.reshape(x, (tf.shape(x)[0], -1))


def crd_info_nce(student_embeddings, teacher_embeddings, teacher_bank=None, student_bank=None, tau=0.07):
    """Symmetric InfoNCE of contrastive representation distillation, one value per example.

    With L2-normalised embeddings `s_i`, `t_i` and negatives drawn from the
    other examples of the batch plus a memory bank `M` of past embeddings:

    `l_s(i) = -log( exp(s_i.t_i/tau) / (sum_j exp(s_i.t_j/tau) + sum_m exp(s_i.M^t_m/tau)) )`

    and `l_t(i)` the same with the roles swapped (teacher anchor, student
    negatives); the loss is `l_s(i) + l_t(i)`. This is the InfoNCE form of CRD
    (a softmax over one positive and `b - 1 + |M|` negatives), not the paper's
    NCE with noise probabilities; it is the variant CRD's authors list as the
    lower-variance alternative and the one most reproductions use.

    Paper: Y. Tian, D. Krishnan, P. Isola, "Contrastive Representation
    Distillation", ICLR 2020 (arXiv 2019).

    Args:
        student_embeddings: `(batch, d)` student embeddings (normalised here).
        teacher_embeddings: `(batch, d)` teacher embeddings (normalised here).
        teacher_bank: None or `(m, d)` unit vectors: extra negatives for the
            student anchor.
        student_bank: None or `(m, d)`: extra negatives for the teacher anchor.
        tau: softmax temperature of the critic (paper: 0.07).

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:

    >>> import numpy as np
    >>> e = np.eye(2, dtype="float32")
    >>> round(float(np.mean(crd_info_nce(e, e, tau=1.0))), 4)
    0.6265
    """
    s = tf.math.l2_normalize(as_float32(student_embeddings), axis=-1)
    t = tf.math.l2_normalize(as_float32(teacher_embeddings), axis=-1)
    labels = tf.range(tf.shape(s)[0])

    def one_side(anchor, positives, bank):
        logits = tf.matmul(anchor, positives, transpose_b=True)
        if bank is not None:
            logits = tf.concat([logits, tf.matmul(anchor, as_float32(bank), transpose_b=True)], axis=-1)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits / tau)

    return one_side(s, t, teacher_bank) + one_side(t, s, student_bank)


@keras.saving.register_keras_serializable(package="keras_kd")
class CRDState(keras.layers.Layer):
    """CRD's state: trainable linear embedding heads and a non-trainable memory bank of negatives.

    The bank is a first-in-first-out queue of the last `bank_size` detached
    teacher and student embeddings (MoCo style), written after each loss
    computation; it starts as random unit vectors.

    Args:
        embedding_dim: width of the shared embedding space (paper: 128).
        bank_size: number of past embeddings kept per model (0: in-batch
            negatives only).
    """

    def __init__(self, embedding_dim=128, bank_size=4096, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.embedding_dim = int(embedding_dim)
        self.bank_size = int(bank_size)
        self.student_head = keras.layers.Dense(self.embedding_dim, dtype="float32", name="student_head")
        self.teacher_head = keras.layers.Dense(self.embedding_dim, dtype="float32", name="teacher_head")

    def build_heads(self, teacher_width, student_width):
        self.student_head.build((None, student_width))
        self.teacher_head.build((None, teacher_width))
        if self.bank_size > 0:
            def unit_rows(shape, dtype=None):
                rows = tf.random.normal(shape, seed=17)
                return tf.math.l2_normalize(rows, axis=-1)

            shape = (self.bank_size, self.embedding_dim)
            self.teacher_bank = self.add_weight(name="teacher_bank", shape=shape, initializer=unit_rows,
                                                trainable=False)
            self.student_bank = self.add_weight(name="student_bank", shape=shape, initializer=unit_rows,
                                                trainable=False)
            self.bank_pointer = self.add_weight(name="bank_pointer", shape=(), dtype="int32",
                                                initializer="zeros", trainable=False)
        self.built = True

    def enqueue(self, teacher_embeddings, student_embeddings):
        """Writes the batch's detached embeddings into the queue at the pointer (wrapping around)."""
        if self.bank_size == 0:
            return
        batch = tf.shape(teacher_embeddings)[0]
        indices = tf.math.floormod(self.bank_pointer + tf.range(batch), self.bank_size)[:, None]
        self.teacher_bank.assign(tf.tensor_scatter_nd_update(self.teacher_bank, indices,
                                                             tf.stop_gradient(teacher_embeddings)))
        self.student_bank.assign(tf.tensor_scatter_nd_update(self.student_bank, indices,
                                                             tf.stop_gradient(student_embeddings)))
        self.bank_pointer.assign(tf.math.floormod(self.bank_pointer + batch, self.bank_size))

    def get_config(self):
        config = super().get_config()
        config.update(embedding_dim=self.embedding_dim, bank_size=self.bank_size)
        return config


@register_loss("crd")
class CRD(DistillationLoss):
    """Contrastive representation distillation (Tian et al., ICLR 2020), InfoNCE form.

    Both layers are flattened and mapped by trainable linear heads into a
    shared `embedding_dim` space (the heads live in the `CRDState` layer the
    Distiller owns); each student embedding must pick its own teacher
    embedding out of the other batch examples and a memory bank of past
    teacher embeddings, and vice versa (see `crd_info_nce`).

    Negatives: the Distiller passes no sample indices, so instead of the
    paper's per-index memory updated with momentum, the bank is a FIFO queue
    of the last `bank_size` embeddings (in-batch negatives plus the queue).
    The queue is written on every call, in evaluation too. Batch-relation
    loss: per-example values whose mean is the batch loss, computed per
    replica under `tf.distribute` (each replica keeps its own queue writes).

    Args:
        teacher_layer_name, student_layer_name: layers to read (typically the
            penultimate embeddings); widths may differ.
        embedding_dim: width of the shared embedding space.
        bank_size: queue length; 0 uses in-batch negatives only.
        tau: critic temperature.
        name: name in logs.

    Example:

    ```python
    crd = CRD("t_embed", "s_embed", embedding_dim=64, bank_size=1024)
    Distiller(teacher, student, distillation_losses=["soft_target_kl", crd], distillation_loss_weights=[1.0, 0.8])
    ```
    """

    function = staticmethod(crd_info_nce)

    def __init__(self, teacher_layer_name=None, student_layer_name=None, embedding_dim=128, bank_size=4096,
                 tau=0.07, name="crd", reduction="sum_over_batch_size"):
        super().__init__(teacher_layer_name=teacher_layer_name, student_layer_name=student_layer_name, name=name,
                         reduction=reduction)
        if int(embedding_dim) < 1 or int(bank_size) < 0 or not tau > 0:
            raise ValueError(
                f"CRD needs embedding_dim >= 1, bank_size >= 0 and tau > 0; got embedding_dim={embedding_dim!r}, "
                f"bank_size={bank_size!r}, tau={tau!r}."
            )
        self.embedding_dim = int(embedding_dim)
        self.bank_size = int(bank_size)
        self.tau = float(tau)

    def validate_shapes(self, teacher_shape, student_shape):
        for role, shape in (("teacher", teacher_shape), ("student", student_shape)):
            if shape is not None and any(d is None for d in tuple(shape)[1:]):
                raise ValueError(
                    f"CRD flattens its layers into fixed-width embeddings, but the {role} layer has shape "
                    f"{tuple(shape)} with unknown sizes. Pick a layer with a fully known shape."
                )

    def create_state(self, teacher_shape, student_shape):
        if teacher_shape is None or student_shape is None:
            raise ValueError(
                "CRD builds its embedding heads from the layer shapes, but a model's output shape is unknown "
                "(subclassed model?). Name Functional-model layers with teacher_layer_name/student_layer_name."
            )
        state = CRDState(self.embedding_dim, self.bank_size, name=f"{self.name}_state")
        state.build_heads(math.prod(tuple(teacher_shape)[1:]), math.prod(tuple(student_shape)[1:]))
        return state

    def compute(self, teacher, student, state=None, **context):
        if state is None:
            raise ValueError("CRD needs its CRDState (embedding heads and memory bank); use it in a keras_kd "
                             "Distiller, which creates and trains it.")
        t = tf.math.l2_normalize(state.teacher_head(_flatten(teacher)), axis=-1)
        s = tf.math.l2_normalize(state.student_head(_flatten(student)), axis=-1)
        if state.bank_size > 0:
            values = crd_info_nce(s, t, tf.identity(state.teacher_bank), tf.identity(state.student_bank), self.tau)
            with tf.control_dependencies([values]):
                state.enqueue(t, s)
            return tf.identity(values)
        return crd_info_nce(s, t, tau=self.tau)

    def call(self, y_true, y_pred):
        raise ValueError("CRD owns trainable heads and a memory bank; use it in a keras_kd Distiller.")

    def get_config(self):
        config = super().get_config()
        config.update(embedding_dim=self.embedding_dim, bank_size=self.bank_size, tau=self.tau)
        return config


def vid_negative_log_likelihood(teacher, mean, variance):
    """VID's Gaussian negative log-likelihood of the teacher features, per example.

    `L = mean_{h, w, c} [ 1/2 * log sigma_c**2 + (t - mu(s))**2 / (2 * sigma_c**2) ]`

    (the constant `1/2 log 2 pi` is dropped, as in the authors' code).

    Args:
        teacher: teacher features `(batch, ..., C)`.
        mean: the regressed mean `mu(s)`, same shape.
        variance: per-channel variances `(C,)`, > 0.

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:

    >>> import numpy as np
    >>> round(float(vid_negative_log_likelihood(np.ones((1, 2)), np.zeros((1, 2)), np.ones(2))[0]), 4)
    0.5
    """
    teacher, mean, variance = as_float32(teacher), as_float32(mean), as_float32(variance)
    nll = 0.5 * (tf.math.log(variance) + tf.square(teacher - mean) / variance)
    return tf.reduce_mean(tf.reshape(nll, (tf.shape(nll)[0], -1)), axis=-1)


@keras.saving.register_keras_serializable(package="keras_kd")
class VIDState(keras.layers.Layer):
    """VID's trainable state: a mean regressor `mu(s)` and per-channel `alpha` with `sigma**2 = softplus(alpha) + eps`.

    The regressor is two 1x1 convolutions (Dense layers for vectors) with a
    ReLU between, as in the authors' code.

    Args:
        channels: the teacher layer's channel count.
        rank: rank of the features (4 for feature maps).
        initial_variance: starting `sigma**2` (authors: 5.0).
        eps: variance floor.
    """

    def __init__(self, channels, rank, initial_variance=5.0, eps=1e-5, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.channels, self.rank = int(channels), int(rank)
        self.initial_variance, self.eps = float(initial_variance), float(eps)
        if self.rank == 4:
            make = lambda units, name: keras.layers.Conv2D(units, 1, dtype="float32", name=name)  # noqa: E731
        else:
            make = lambda units, name: keras.layers.Dense(units, dtype="float32", name=name)  # noqa: E731
        self.hidden = make(self.channels, "mean_hidden")
        self.mean = make(self.channels, "mean_out")

    def build(self, input_shape):
        self.hidden.build(tuple(input_shape))
        self.mean.build(tuple(input_shape)[:-1] + (self.channels,))
        alpha = math.log(math.expm1(self.initial_variance - self.eps))
        self.alpha = self.add_weight(name="alpha", shape=(self.channels,),
                                     initializer=keras.initializers.Constant(alpha), trainable=True)
        self.built = True

    def variance(self):
        return tf.nn.softplus(tf.convert_to_tensor(self.alpha)) + self.eps

    def call(self, student):
        return self.mean(tf.nn.relu(self.hidden(as_float32(student))))

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, rank=self.rank, initial_variance=self.initial_variance, eps=self.eps)
        return config


@register_loss("vid")
class VID(DistillationLoss):
    """Variational information distillation (Ahn et al., CVPR 2019).

    Maximises a variational lower bound of the mutual information between
    teacher and student features by modelling `p(t | s)` as a Gaussian with
    learned mean `mu(s)` and per-channel variance
    `sigma_c**2 = softplus(alpha_c) + eps`; the loss is its negative
    log-likelihood (see `vid_negative_log_likelihood`). Regressor and `alpha`
    live in the `VIDState` layer the Distiller owns and trains. Spatial
    sizes must match; channel counts may differ.

    Paper: S. Ahn, S. X. Hu, A. Damianou, N. D. Lawrence, Z. Dai,
    "Variational Information Distillation for Knowledge Transfer", CVPR 2019.

    Args:
        teacher_layer_name, student_layer_name: layers to read.
        initial_variance: starting `sigma**2`.
        eps: variance floor.
        name: name in logs.

    Example:

    ```python
    VID(teacher_layer_name="t_block2", student_layer_name="s_block2")
    ```
    """

    function = staticmethod(vid_negative_log_likelihood)

    def __init__(self, teacher_layer_name=None, student_layer_name=None, initial_variance=5.0, eps=1e-5, name="vid",
                 reduction="sum_over_batch_size"):
        super().__init__(teacher_layer_name=teacher_layer_name, student_layer_name=student_layer_name, name=name,
                         reduction=reduction)
        if not initial_variance > eps > 0:
            raise ValueError(f"VID needs initial_variance > eps > 0, got {initial_variance!r} and {eps!r}.")
        self.initial_variance = float(initial_variance)
        self.eps = float(eps)

    def validate_shapes(self, teacher_shape, student_shape):
        if teacher_shape is None or student_shape is None:
            return
        _check_feature_shapes(self, teacher_shape, student_shape, channels_may_differ=True, channels_adapter=True)

    def create_state(self, teacher_shape, student_shape):
        if teacher_shape is None or student_shape is None:
            raise ValueError("VID builds its regressor from the layer shapes, but a shape is unknown; name "
                             "layers of Functional models with teacher_layer_name/student_layer_name.")
        state = VIDState(tuple(teacher_shape)[-1], len(student_shape), self.initial_variance, self.eps,
                         name=f"{self.name}_state")
        state.build((None,) + tuple(student_shape)[1:])
        return state

    def compute(self, teacher, student, state=None, **context):
        if state is None:
            raise ValueError("VID needs its VIDState (regressor and variances); use it in a keras_kd Distiller.")
        return vid_negative_log_likelihood(teacher, state(student), state.variance())

    def call(self, y_true, y_pred):
        raise ValueError("VID owns a trainable regressor; use it in a keras_kd Distiller.")

    def get_config(self):
        config = super().get_config()
        config.update(initial_variance=self.initial_variance, eps=self.eps)
        return config
