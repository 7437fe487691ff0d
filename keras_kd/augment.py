"""Consistent augmentation: the teacher and the student see the same view of each batch.

Distillation is function matching (Beyer et al. 2022, "Knowledge distillation:
A good teacher is patient and consistent", arXiv:2106.05237): the student
learns the teacher's function best when both see the *same* aggressively
augmented input, different at every step, over a long schedule. A teacher
whose outputs were cached on fixed inputs, or a student that augments its own
input inside the model, breaks that consistency.

`Distiller(augment=..., mixing=...)` applies, inside the training step and once
per batch:

1. `augment`: a Keras layer (e.g. `keras.Sequential([RandomFlip(), ...])`),
   called with `training=True`, or a callable `x -> x`;
2. `mixing`: `"mixup"`, `"cutmix"`, a `MixUp(...)` / `CutMix(...)`, or None.
   Each example is mixed with another example of the same (per-replica)
   batch. The teacher labels the mixed image itself, so no label is needed;
   when labels are given, the student loss is the mixing-weighted sum of the
   loss on both labels (exact for cross-entropy), losses that read labels get
   the label of the larger part, and so do the training metrics.

Mixing draws from stateless random ops seeded by the step number and the
replica, so it needs no state and runs in any replica context (tested with MirroredStrategy).

Example:

```python
import keras, numpy as np, keras_kd

x = np.random.rand(64, 8, 8, 1).astype("float32"); y = np.random.randint(0, 3, 64)
teacher = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
student = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
distiller = keras_kd.Distiller(
    teacher, student, augment=keras.layers.RandomTranslation(0.1, 0.1), mixing="mixup")
distiller.compile(optimizer="adam")
history = distiller.fit(x, y, epochs=1, verbose=0)
```
"""

from keras_kd.backend import keras, tf

__all__ = ["MixUp", "CutMix", "get_mixing", "augmentation_layers", "augmented_view"]


def _beta(shape, seed, concentration):
    """Stateless Beta(c, c) samples, as the ratio of two gamma draws."""
    seeds = tf.random.experimental.stateless_split(seed, 2)
    a = tf.random.stateless_gamma(shape, seeds[0], alpha=concentration)
    b = tf.random.stateless_gamma(shape, seeds[1], alpha=concentration)
    return a / (a + b)


def per_example(weight, like):
    """A per-example `weight` of shape (batch,) reshaped to broadcast against `like` (batch, ...)."""
    return tf.reshape(weight, [-1] + [1] * (len(like.shape) - 1))


def blend(own, other, weight):
    """`weight * own + (1 - weight) * other`, per example: how mixed inputs, labels' losses and weights combine."""
    w = per_example(tf.cast(weight, own.dtype), own)
    return w * own + (1 - w) * other


def _float_inputs(x, what):
    for tensor in tf.nest.flatten(x):
        if not tensor.dtype.is_floating:
            raise ValueError(
                f"{what} mixes input pixels or features, but an input is {tensor.dtype.name} (token ids or other "
                "integers cannot be mixed). Use mixing=None for integer inputs, and augment them with augment=."
            )


class _Mixing:
    """Base of the input-mixing schemes: `mix(x, seed)` returns `(mixed_x, partner, weight)`.

    `partner[i]` is the index of the example mixed into example `i`; `weight[i]`
    in [0, 1] is the share of example `i` itself in the result (its label's
    weight in the student loss).
    """

    name = None

    def __init__(self, alpha=1.0):
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
            raise ValueError(
                f"{type(self).__name__}(alpha=...) is the concentration of the Beta(alpha, alpha) distribution of the "
                f"mixing weight and must be a number > 0, got {alpha!r}. 1.0 draws the weight uniformly; smaller "
                "values keep most examples close to unmixed."
            )
        self.alpha = float(alpha)

    def mix(self, x, seed):
        raise NotImplementedError

    def get_config(self):
        return {"alpha": self.alpha}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}(alpha={self.alpha})"

    def __eq__(self, other):
        return type(self) is type(other) and self.alpha == other.alpha

    __hash__ = None


@keras.saving.register_keras_serializable(package="keras_kd")
class MixUp(_Mixing):
    """mixup (Zhang et al. 2018, arXiv:1710.09412): `x_i <- w_i x_i + (1 - w_i) x_partner(i)`, `w_i ~ Beta(alpha, alpha)`.

    Args:
        alpha: concentration of the Beta distribution of the per-example weight
            (default 1.0: uniform, as in function matching).

    Example:

    >>> import tensorflow as tf
    >>> x = tf.random.uniform((4, 8, 8, 1))
    >>> mixed, partner, weight = MixUp(0.4).mix(x, tf.constant([0, 1], tf.int64))
    >>> mixed.shape, partner.shape, weight.shape
    (TensorShape([4, 8, 8, 1]), TensorShape([4]), TensorShape([4]))
    """

    name = "mixup"

    def mix(self, x, seed):
        _float_inputs(x, "MixUp")
        first = tf.nest.flatten(x)[0]
        batch = tf.shape(first)[0]
        seeds = tf.random.experimental.stateless_split(seed, 2)
        partner = tf.random.experimental.stateless_shuffle(tf.range(batch), seeds[0])
        weight = _beta([batch], seeds[1], self.alpha)

        return tf.nest.map_structure(lambda t: blend(t, tf.gather(t, partner), weight), x), partner, weight


@keras.saving.register_keras_serializable(package="keras_kd")
class CutMix(_Mixing):
    """CutMix (Yun et al. 2019, arXiv:1905.04899): a box of the partner image is pasted into each image.

    The box covers a fraction `1 - w` of the image, `w ~ Beta(alpha, alpha)`,
    at a uniform random centre, clipped to the image; the weight returned is
    the fraction of the image that stays its own after clipping. Inputs must
    be images of shape `(batch, height, width, channels)`.

    Args:
        alpha: concentration of the Beta distribution of the kept area
            (default 1.0).

    Example:

    >>> import tensorflow as tf
    >>> mixed, partner, kept = CutMix().mix(tf.random.uniform((4, 8, 8, 3)), tf.constant([0, 1], tf.int64))
    >>> bool(tf.reduce_all((kept >= 0) & (kept <= 1)))
    True
    """

    name = "cutmix"

    def mix(self, x, seed):
        _float_inputs(x, "CutMix")
        tensors = tf.nest.flatten(x)
        for tensor in tensors:
            if len(tensor.shape) != 4:
                raise ValueError(
                    f"CutMix pastes boxes into images of shape (batch, height, width, channels), but an input has "
                    f"shape {tuple(tensor.shape)}. Use mixing='mixup' for other inputs."
                )
        first = tensors[0]
        shape = tf.shape(first)
        batch, height, width = shape[0], shape[1], shape[2]
        seeds = tf.random.experimental.stateless_split(seed, 4)
        partner = tf.random.experimental.stateless_shuffle(tf.range(batch), seeds[0])
        kept = _beta([batch], seeds[1], self.alpha)
        side = tf.sqrt(1.0 - kept)
        h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
        centre_y = tf.random.stateless_uniform([batch], seeds[2]) * h
        centre_x = tf.random.stateless_uniform([batch], seeds[3]) * w
        top = tf.clip_by_value(tf.round(centre_y - side * h / 2), 0.0, h)
        bottom = tf.clip_by_value(tf.round(centre_y + side * h / 2), 0.0, h)
        left = tf.clip_by_value(tf.round(centre_x - side * w / 2), 0.0, w)
        right = tf.clip_by_value(tf.round(centre_x + side * w / 2), 0.0, w)
        rows = tf.range(h)[None, :]
        cols = tf.range(w)[None, :]
        in_rows = tf.cast((rows >= top[:, None]) & (rows < bottom[:, None]), tf.float32)
        in_cols = tf.cast((cols >= left[:, None]) & (cols < right[:, None]), tf.float32)
        box = in_rows[:, :, None] * in_cols[:, None, :]  # (batch, height, width): 1 inside the pasted box
        weight = 1.0 - tf.reduce_sum(box, axis=[1, 2]) / (h * w)

        def mix_one(tensor):
            mask = tf.cast(box[..., None], tensor.dtype)
            return (1 - mask) * tensor + mask * tf.gather(tensor, partner)

        return tf.nest.map_structure(mix_one, x), partner, weight


_MIXINGS = {cls.name: cls for cls in (MixUp, CutMix)}


def get_mixing(mixing):
    """Resolves `mixing=`: None, `"mixup"`, `"cutmix"`, or a `MixUp`/`CutMix` (or a config dict of one)."""
    if mixing is None or isinstance(mixing, _Mixing):
        return mixing
    if isinstance(mixing, str) and mixing.lower() in _MIXINGS:
        return _MIXINGS[mixing.lower()]()
    if isinstance(mixing, dict):
        return keras.saving.deserialize_keras_object(mixing)
    raise ValueError(
        f"mixing must be None, one of {sorted(_MIXINGS)}, or a keras_kd.augment.MixUp/CutMix instance, got "
        f"{mixing!r}."
    )


def check_augment(augment):
    """Validates `augment=`: None, a Keras layer, or a callable taking and returning the inputs."""
    if augment is None or isinstance(augment, keras.layers.Layer) or callable(augment):
        return augment
    raise TypeError(
        f"augment must be a Keras layer (e.g. keras.Sequential([keras.layers.RandomFlip(), ...])) or a callable "
        f"x -> x, got {type(augment).__name__}."
    )


def apply_augment(augment, x):
    """One augmented view of the batch `x` (a Keras layer runs in training mode)."""
    if isinstance(augment, keras.layers.Layer):
        return augment(x, training=True)
    return augment(x)


def augmented_view(augment, mixing, x, seed, step):
    """The batch's one view: `augment`, then `mixing`; returns `(x, mix)`, `mix = (partner, weight)` or None.

    Mixing is seeded by `(seed, step * replicas + replica)`: stateless, and
    different on every step and replica.
    """
    if augment is not None:
        x = apply_augment(augment, x)
    if mixing is None:
        return x, None
    context = tf.distribute.get_replica_context()
    replica = 0 if context is None else context.replica_id_in_sync_group
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    step = tf.cast(step, tf.int64) * replicas + tf.cast(replica, tf.int64)
    x, partner, weight = mixing.mix(x, tf.stack([tf.constant(seed, tf.int64), step]))
    return x, (partner, weight)


def serialize_augment(augment):
    """The config of `augment=` for `Distiller.get_config`; a plain function must be registered to be saved."""
    if augment is None:
        return None
    if not isinstance(augment, keras.layers.Layer):
        name = keras.saving.get_registered_name(augment) if hasattr(augment, "__name__") else None
        if name is None or name == getattr(augment, "__name__", None) or "<lambda>" in name:
            raise ValueError(
                f"The Distiller's augment= is a plain callable ({augment!r}), which cannot be saved: a loaded "
                "Distiller would train without it. Pass a Keras layer (keras.Sequential of preprocessing layers), "
                "or decorate the function with @keras.saving.register_keras_serializable()."
            )
    return keras.saving.serialize_keras_object(augment)


def augmentation_layers(model):
    """Names of the random augmentation layers inside `model` (they make the student see its own view).

    A layer counts when it is one of Keras' random preprocessing layers
    (`RandomFlip`, `RandomTranslation`, ..., `keras.layers.RandAugment`,
    `AugMix`, ...), found by walking nested models.
    """
    found, stack = [], list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop(0)
        cls = type(layer)
        if cls.__module__.startswith(("keras.", "tf_keras.")) and (
                cls.__name__.startswith("Random") or cls.__name__ in ("RandAugment", "AugMix", "CutMix", "MixUp")):
            found.append(layer.name)
        stack.extend(getattr(layer, "layers", []))
    return found
