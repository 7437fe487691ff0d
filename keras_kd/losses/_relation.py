"""Relation-based distillation: match how examples relate to each other, not the features themselves.

Each loss flattens the named layer's output to one vector per example and
compares batch-by-batch structures (distances, angles, similarities), so the
teacher's and student's widths may differ.

These losses are not per-example: they couple the examples of a batch. To
fit the Distiller's contract they return one value per example whose mean
over the batch is the batch loss of the paper. Under `tf.distribute` the
relations are computed within each replica's batch (per replica), and the
Distiller averages the replicas' values.
"""

from keras_kd.backend import tf
from keras_kd.losses._base import DistillationLoss, as_float32, register_loss

__all__ = [
    "rkd_distance",
    "RKDDistance",
    "rkd_angle",
    "RKDAngle",
    "pkt",
    "PKT",
    "similarity_preserving",
    "SimilarityPreserving",
]


def _flatten(x):
    x = as_float32(x)
    if len(x.shape) == 2:
        return x
    return tf.reshape(x, (tf.shape(x)[0], -1))


def _huber(x):
    """Smooth L1 with threshold 1 (PyTorch's `smooth_l1_loss`, the RKD papers' Huber loss)."""
    absolute = tf.abs(x)
    return tf.where(absolute < 1.0, 0.5 * tf.square(x), absolute - 0.5)


def _pairwise_distances(e, eps=1e-12):
    squared = tf.reduce_sum(tf.square(e), axis=-1)
    d2 = squared[:, None] + squared[None, :] - 2.0 * tf.matmul(e, e, transpose_b=True)
    d = tf.sqrt(tf.maximum(d2, eps))
    return d * (1.0 - tf.eye(tf.shape(e)[0], dtype=d.dtype))


def _mean_normalized_distances(e):
    d = _pairwise_distances(e)
    positive = tf.cast(d > 0, d.dtype)
    mean = tf.math.divide_no_nan(tf.reduce_sum(d), tf.reduce_sum(positive))
    return tf.math.divide_no_nan(d, mean)


def rkd_distance(teacher, student):
    """RKD distance-wise loss (Park et al., CVPR 2019), one value per example.

    With `psi(i, j) = ||e_i - e_j||_2 / mu`, `mu` the mean distance over the
    pairs `i != j` of the batch, and `l_delta` the Huber loss (threshold 1):

    `L = 1/b**2 * sum_{i, j} l_delta(psi_t(i, j) - psi_s(i, j))`

    Example `i` gets `1/b * sum_j l_delta(...)` (its row), so the batch mean
    is `L`. Computed per replica under `tf.distribute`.

    Paper: W. Park, D. Kim, Y. Lu, M. Cho, "Relational Knowledge
    Distillation", CVPR 2019.

    Args:
        teacher: teacher features `(batch, ...)` (flattened per example).
        student: student features `(batch, ...)`; the width may differ.

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:

    >>> import numpy as np
    >>> t = np.array([[0.0], [1.0], [3.0]]); s = np.array([[0.0], [1.0], [2.0]])
    >>> round(float(np.mean(rkd_distance(t, s))), 4)
    0.0139
    """
    t = _mean_normalized_distances(_flatten(teacher))
    s = _mean_normalized_distances(_flatten(student))
    return tf.reduce_mean(_huber(s - t), axis=-1)


def _angles(e):
    differences = e[None, :, :] - e[:, None, :]  # [i, j] = e_j - e_i
    unit = tf.math.l2_normalize(differences, axis=-1)
    return tf.matmul(unit, unit, transpose_b=True)  # [i, j, k] = cos of the angle at e_i between e_j and e_k


def rkd_angle(teacher, student):
    """RKD angle-wise loss (Park et al., CVPR 2019), one value per example.

    With `psi(i, j, k) = <(e_j - e_i)/||e_j - e_i||, (e_k - e_i)/||e_k - e_i||>`
    (the cosine of the angle at `e_i`; zero when two points coincide):

    `L = 1/b**3 * sum_{i, j, k} l_delta(psi_t(i, j, k) - psi_s(i, j, k))`

    Example `i` gets the mean over `(j, k)`, so the batch mean is `L`.
    Memory grows as `b**3 * width`: keep batches moderate. Computed per
    replica under `tf.distribute`.

    Paper: W. Park, D. Kim, Y. Lu, M. Cho, "Relational Knowledge
    Distillation", CVPR 2019.

    Args:
        teacher: teacher features `(batch, ...)`.
        student: student features `(batch, ...)`; the width may differ.

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:

    >>> import numpy as np
    >>> t = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]); s = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    >>> round(float(np.mean(rkd_angle(t, s))), 4)
    0.037
    """
    t = _angles(_flatten(teacher))
    s = _angles(_flatten(student))
    return tf.reduce_mean(_huber(s - t), axis=[1, 2])


def _conditional_probabilities(e, eps=1e-7):
    e = tf.math.l2_normalize(e, axis=-1, epsilon=eps)
    kernel = (tf.matmul(e, e, transpose_b=True) + 1.0) / 2.0
    return kernel / tf.reduce_sum(kernel, axis=-1, keepdims=True)


def pkt(teacher, student, eps=1e-7):
    """Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018), one value per example.

    Cosine-similarity kernels `K_ij = (cos(e_i, e_j) + 1) / 2` become
    conditional probabilities `P_j|i = K_ij / sum_k K_ik` (the sum over the
    whole batch row, as in the authors' code); example `i` gets

    `L_i = sum_j P^t_j|i * log((P^t_j|i + eps) / (P^s_j|i + eps))`

    the KL divergence between its teacher and student neighbour
    distributions. (The authors' code averages over all `b**2` entries, i.e.
    `L / b`; rescale with the loss weight if you port their settings.)
    Computed per replica under `tf.distribute`.

    Paper: N. Passalis, A. Tefas, "Learning Deep Representations with
    Probabilistic Knowledge Transfer", ECCV 2018.

    Args:
        teacher: teacher features `(batch, ...)`.
        student: student features `(batch, ...)`; the width may differ.
        eps: stabiliser inside the logarithm.

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:

    >>> import numpy as np
    >>> t = np.array([[1.0, 0.0], [0.0, 1.0]]); s = np.array([[1.0, 0.0], [1.0, 0.0]])
    >>> round(float(np.mean(pkt(t, s))), 4)
    0.0566
    """
    p_t = _conditional_probabilities(_flatten(teacher), eps)
    p_s = _conditional_probabilities(_flatten(student), eps)
    return tf.reduce_sum(p_t * tf.math.log((p_t + eps) / (p_s + eps)), axis=-1)


def _similarity(e):
    return tf.math.l2_normalize(tf.matmul(e, e, transpose_b=True), axis=-1)


def similarity_preserving(teacher, student):
    """Similarity-preserving KD (Tung & Mori, ICCV 2019), one value per example.

    With `A` the flattened features `(b, d)` and `G = row_l2_normalize(A A^T)`:

    `L = 1/b**2 * ||G_t - G_s||_F**2`

    Example `i` gets `1/b * sum_j (G_t - G_s)_ij**2`, so the batch mean is
    `L`. The paper's weight gamma (3000 on CIFAR) belongs in the Distiller's
    `distillation_loss_weights`. Computed per replica under `tf.distribute`.

    Paper: F. Tung, G. Mori, "Similarity-Preserving Knowledge Distillation",
    ICCV 2019.

    Args:
        teacher: teacher features `(batch, ...)`.
        student: student features `(batch, ...)`; the width may differ.

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:

    >>> import numpy as np
    >>> t = np.array([[1.0, 0.0], [0.0, 1.0]]); s = np.array([[1.0, 0.0], [1.0, 0.0]])
    >>> round(float(np.mean(similarity_preserving(t, s))), 4)
    0.2929
    """
    g_t = _similarity(_flatten(teacher))
    g_s = _similarity(_flatten(student))
    batch = tf.cast(tf.shape(g_t)[0], tf.float32)
    return tf.reduce_sum(tf.square(g_t - g_s), axis=-1) / batch


class _RelationLoss(DistillationLoss):
    """Batch-relation loss: any two layers, widths may differ; only the batch is shared."""

    def validate_shapes(self, teacher_shape, student_shape):
        return None

    def compute(self, teacher, student, **context):
        return type(self).function(teacher, student)


@register_loss("rkd_distance")
class RKDDistance(_RelationLoss):
    """Relational KD, distance-wise (Park et al., CVPR 2019); see `rkd_distance`.

    Batch-relation loss: per-example values whose mean is the batch loss;
    computed per replica under `tf.distribute`. The paper weights it by 25
    (use `distillation_loss_weights`).

    Args:
        teacher_layer_name, student_layer_name: layers to read (default: the
            final outputs); widths may differ.
        name: name in logs.

    Example:

    ```python
    Distiller(teacher, student, distillation_losses=["soft_target_kl", RKDDistance("t_embed", "s_embed")],
              distillation_loss_weights=[1.0, 25.0])
    ```
    """

    function = staticmethod(rkd_distance)


@register_loss("rkd_angle")
class RKDAngle(_RelationLoss):
    """Relational KD, angle-wise (Park et al., CVPR 2019); see `rkd_angle`.

    Batch-relation loss: per-example values whose mean is the batch loss;
    computed per replica under `tf.distribute`. The paper weights it by 50.

    Args:
        teacher_layer_name, student_layer_name: layers to read; widths may differ.
        name: name in logs.

    Example:

    ```python
    RKDAngle(teacher_layer_name="t_embed", student_layer_name="s_embed")
    ```
    """

    function = staticmethod(rkd_angle)


@register_loss("pkt")
class PKT(_RelationLoss):
    """Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018); see `pkt`.

    Batch-relation loss: per-example values whose mean is the batch loss;
    computed per replica under `tf.distribute`.

    Args:
        teacher_layer_name, student_layer_name: layers to read; widths may differ.
        name: name in logs.

    Example:

    ```python
    PKT(teacher_layer_name="t_embed", student_layer_name="s_embed")
    ```
    """

    function = staticmethod(pkt)


@register_loss("similarity_preserving")
class SimilarityPreserving(_RelationLoss):
    """Similarity-preserving KD (Tung & Mori, ICCV 2019); see `similarity_preserving`.

    Batch-relation loss: per-example values whose mean is the batch loss;
    computed per replica under `tf.distribute`.

    Args:
        teacher_layer_name, student_layer_name: layers to read; widths may differ.
        name: name in logs.

    Example:

    ```python
    SimilarityPreserving(teacher_layer_name="t_block3", student_layer_name="s_block3")
    ```
    """

    function = staticmethod(similarity_preserving)

