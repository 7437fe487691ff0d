"""keras_kd.augment and the Distiller's augment=/mixing=: one view of each batch for teacher and student."""

import warnings

import numpy as np
import pytest

import keras_kd
from keras_kd import augment as kd_augment
from keras_kd.backend import keras, tf
from tests.helpers import numpy_kd


def images(n=32, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, size, size, 1)).astype("float32"), rng.integers(0, 3, n).astype("int32")


def conv_net(name, seed=0):
    init = keras.initializers.GlorotUniform(seed)
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, activation="relu", kernel_initializer=init, name=f"{name}_features"),
        keras.layers.Flatten(),
        keras.layers.Dense(3, kernel_initializer=init),
    ], name=name)


def twin(teacher):
    """A student with the teacher's architecture and weights: distilling it costs 0 only on the teacher's view."""
    student = keras.models.clone_model(teacher)
    student.set_weights(teacher.get_weights())
    student.trainable = True  # a clone of a teacher a Distiller froze is frozen too
    return student


# --------------------------------------------------------------------- mixing
@pytest.mark.parametrize("mixing", [kd_augment.MixUp(0.4), kd_augment.CutMix(1.0)], ids=["mixup", "cutmix"])
def test_mixing_is_a_convex_combination_of_the_batch(mixing):
    x, _ = images(16)
    mixed, partner, weight = mixing.mix(tf.constant(x), tf.constant([3, 4], tf.int64))
    mixed, partner, weight = mixed.numpy(), partner.numpy(), weight.numpy()
    assert sorted(partner) == list(range(16))
    assert np.all((weight >= 0) & (weight <= 1)) and weight.std() > 0
    if isinstance(mixing, kd_augment.MixUp):
        expected = weight[:, None, None, None] * x + (1 - weight[:, None, None, None]) * x[partner]
        np.testing.assert_allclose(mixed, expected, rtol=1e-5, atol=1e-6)
    else:
        # Every pixel comes from the image or its partner, and the weight is the share that stayed its own.
        own = np.isclose(mixed, x) & ~np.isclose(x, x[partner])
        other = np.isclose(mixed, x[partner])
        assert np.all(own | other)
        differs = ~np.isclose(x, x[partner])
        kept = (own & differs).sum(axis=(1, 2, 3)) / np.maximum(differs.sum(axis=(1, 2, 3)), 1)
        # the weight is the box's exact share (measured difference 0.0): float32 rounding only
        np.testing.assert_allclose(kept, weight, rtol=0, atol=1e-6)
    again = mixing.mix(tf.constant(x), tf.constant([3, 4], tf.int64))[0].numpy()
    np.testing.assert_array_equal(again, mixed)
    assert not np.allclose(mixing.mix(tf.constant(x), tf.constant([3, 5], tf.int64))[0].numpy(), mixed)


def test_get_mixing_resolves_names_instances_and_configs():
    assert kd_augment.get_mixing(None) is None
    assert kd_augment.get_mixing("mixup") == kd_augment.MixUp()
    assert kd_augment.get_mixing("CutMix") == kd_augment.CutMix()
    mixup = kd_augment.MixUp(0.2)
    assert kd_augment.get_mixing(mixup) is mixup
    assert kd_augment.get_mixing(keras.saving.serialize_keras_object(mixup)) == mixup
    with pytest.raises(ValueError, match=r"mixing must be None, one of \['cutmix', 'mixup'\]"):
        kd_augment.get_mixing("mixdown")


@pytest.mark.parametrize("alpha", [0, -1.0, "1", True])
def test_mixing_alpha_must_be_positive(alpha):
    with pytest.raises(ValueError, match="must be a number > 0"):
        kd_augment.MixUp(alpha)


def test_mixing_refuses_integer_inputs_and_cutmix_non_images():
    with pytest.raises(ValueError, match="token ids or other integers cannot be mixed"):
        kd_augment.MixUp().mix(tf.constant([[1, 2], [3, 4]]), tf.constant([0, 0], tf.int64))
    with pytest.raises(ValueError, match=r"CutMix pastes boxes into images.*shape \(2, 2\)"):
        kd_augment.CutMix().mix(tf.constant([[1.0, 2.0], [3.0, 4.0]]), tf.constant([0, 0], tf.int64))


def test_augmentation_layers_are_found_in_nested_models():
    inner = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.RandomFlip(name="flip")], name="inner")
    model = keras.Sequential([keras.Input((8, 8, 1)), inner, keras.layers.RandomTranslation(0.1, 0.1, name="shift"),
                              keras.layers.Flatten(), keras.layers.Dense(2)])
    assert sorted(kd_augment.augmentation_layers(model)) == ["flip", "shift"]
    assert kd_augment.augmentation_layers(conv_net("plain")) == []


# ------------------------------------------------------------------ Distiller
@pytest.mark.parametrize("mixing", [None, "mixup", "cutmix"])
def test_teacher_and_student_see_the_same_view(mixing):
    """A student identical to its teacher has zero distillation loss only if both saw the same input."""
    x, y = images()
    teacher = conv_net("teacher")
    distiller = keras_kd.Distiller(teacher, twin(teacher), augment=keras.layers.GaussianNoise(1.0), mixing=mixing,
                                   alpha=1.0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))
    history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert history.history["distillation_loss"][-1] < 1e-6
    # The control: the noise inside the student only, so the teacher saw the clean image.
    noisy = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.GaussianNoise(1.0), twin(teacher)])
    control = keras_kd.Distiller(teacher, noisy, alpha=1.0)
    control.compile(optimizer=keras.optimizers.SGD(0.0))
    assert control.fit(x, y, batch_size=8, epochs=1, verbose=0).history["distillation_loss"][-1] > 1e-3


def test_a_view_differs_between_steps():
    seen = []

    class Record(keras.layers.Layer):
        def call(self, inputs, training=None):
            return inputs

    x, y = images(16)
    teacher = conv_net("teacher")
    distiller = keras_kd.Distiller(teacher, twin(teacher), augment=Record(), mixing="mixup")
    distiller.compile(optimizer="adam", run_eagerly=True)
    original = distiller.mixing.mix

    def spy(inputs, seed):
        seen.append(seed.numpy().tolist())
        return original(inputs, seed)

    distiller.mixing.mix = spy
    distiller.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert len(seen) == 4 and len({tuple(s) for s in seen}) == 4


def test_mixed_labels_weight_the_student_loss_and_soft_targets_need_none():
    x, y = images(8)
    teacher = conv_net("teacher")
    student = conv_net("student", seed=1)
    distiller = keras_kd.Distiller(teacher, student, alpha=0.5, temperature=2.0)
    distiller.compile(optimizer="adam")
    distiller._ensure_losses()
    logits = student(x).numpy()
    teacher_logits = teacher(x).numpy()
    partner = np.array([1, 0, 3, 2, 5, 4, 7, 6])
    share = np.linspace(0.1, 0.9, 8).astype("float32")
    terms = distiller.compute_distillation_losses(
        tf.constant(x), tf.constant(y), {"final_output": tf.constant(logits)},
        {"final_output": tf.constant(teacher_logits)}, mix=(tf.constant(partner), tf.constant(share)))
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce = -log_p[np.arange(8), y]
    ce_partner = -log_p[np.arange(8), y[partner]]
    np.testing.assert_allclose(terms["student_loss"], np.mean(share * ce + (1 - share) * ce_partner), rtol=1e-5)
    np.testing.assert_allclose(terms["distillation_loss"], numpy_kd(teacher_logits, logits, 2.0).mean(), rtol=1e-4)


def test_metrics_under_mixing_use_the_label_of_the_larger_part():
    y = tf.constant([0, 1, 2, 0])
    partner = tf.constant([1, 2, 3, 0])
    share = tf.constant([0.9, 0.2, 0.5, 0.4])
    dominant = keras_kd.Distiller._dominant_labels(y, (partner, share)).numpy()
    np.testing.assert_array_equal(dominant, [0, 2, 2, 0])


def test_augment_works_with_feature_losses_and_a_bfloat16_teacher():
    x, y = images()
    teacher = conv_net("teacher")
    distiller = keras_kd.Distiller(
        teacher, conv_net("student", seed=1), teacher_dtype="bfloat16",
        distillation_losses=[keras_kd.losses.SoftTargetKLDivergence(3.0),
                             keras_kd.losses.FitNetsHint("teacher_features", "student_features")],
        augment=keras.layers.RandomTranslation(0.1, 0.1), mixing="cutmix")
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1]) and history.history["distillation_loss"][-1] > 0


def test_augment_works_under_mirrored_strategy():
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        pytest.skip("needs two logical CPU devices (configured in conftest before TensorFlow starts)")
    x, y = images()
    strategy = tf.distribute.MirroredStrategy([d.name for d in devices[:2]])
    with strategy.scope():
        teacher = conv_net("teacher")
        distiller = keras_kd.Distiller(teacher, twin(teacher), alpha=1.0, mixing="mixup",
                                       augment=keras.layers.RandomTranslation(0.2, 0.2))
        distiller.compile(optimizer=keras.optimizers.SGD(0.0))
    history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert history.history["distillation_loss"][-1] < 1e-6


def test_a_cached_teacher_is_refused_with_augmentation(tmp_path):
    x, y = images(16)
    teacher = conv_net("teacher")
    distiller = keras_kd.Distiller(teacher, conv_net("student", 1), augment=keras.layers.RandomFlip())
    distiller.compile(optimizer="adam")
    with pytest.raises(ValueError, match="its outputs cannot be cached once"):
        keras_kd.cache_teacher_outputs(distiller, x, y)
    cached = keras_kd.cache_teacher_outputs(teacher, x, y, batch_size=8)
    with pytest.raises(ValueError, match="a cached teacher labelled the un-augmented inputs"):
        distiller.fit(cached, epochs=1, verbose=0)


def test_augmentation_inside_the_student_warns():
    student = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.RandomFlip(name="flip"),
                                keras.layers.Flatten(), keras.layers.Dense(3)])
    with pytest.warns(UserWarning, match=r"contains random augmentation layers \(flip\).*Distiller\(augment="):
        keras_kd.Distiller(conv_net("teacher"), student)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        keras_kd.Distiller(conv_net("teacher"), conv_net("student", 1), augment=keras.layers.RandomFlip())


def test_augment_must_be_a_layer_or_callable():
    with pytest.raises(TypeError, match="augment must be a Keras layer .* or a callable x -> x, got int"):
        keras_kd.Distiller(conv_net("teacher"), conv_net("student", 1), augment=3)


def test_config_round_trip_keeps_augment_and_mixing(tmp_path):
    x, y = images(16)
    teacher = conv_net("teacher")
    distiller = keras_kd.Distiller(teacher, conv_net("student", 1), mixing=kd_augment.CutMix(0.5),
                                   augment=keras.Sequential([keras.layers.RandomFlip("horizontal")], name="aug"))
    distiller.compile(optimizer="adam")
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "d.keras")
    distiller.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.mixing == kd_augment.CutMix(0.5)
    assert isinstance(loaded.augment, keras.Sequential)
    assert [type(layer).__name__ for layer in loaded.augment.layers] == ["RandomFlip"]
    loaded.fit(x, y, batch_size=8, epochs=1, verbose=0)


def test_a_plain_function_augment_trains_but_cannot_be_saved():
    x, y = images(16)
    distiller = keras_kd.Distiller(conv_net("teacher"), conv_net("student", 1), augment=lambda t: t + 0.1)
    distiller.compile(optimizer="adam")
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="plain callable .* cannot be saved.*register_keras_serializable"):
        distiller.get_config()
