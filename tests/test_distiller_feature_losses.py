"""Feature, relation and information losses inside a Distiller: taps, Distiller-owned state, errors."""

import numpy as np
import pytest

from keras_kd import losses as kd_losses
from keras_kd.backend import keras, tf
from keras_kd.distiller import Distiller


def _cnn(channels, name, blocks=2):
    inputs = keras.Input((8, 8, 1))
    x = inputs
    for i in range(blocks):
        x = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name=f"{name}_conv{i + 1}")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(channels, activation="relu", name=f"{name}_embed")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name=f"{name}_logits")(x), name=name)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.random((16, 8, 8, 1)).astype("float32"), rng.integers(0, 3, 16)


def test_fitnets_adapter_is_owned_by_the_distiller_not_the_student(data, tmp_path):
    x, y = data
    teacher, student = _cnn(8, "teacher"), _cnn(4, "student", blocks=3)
    student_weights = len(student.weights)
    hint = kd_losses.FitNetsHint("teacher_conv2", "student_conv3")
    distiller = Distiller(teacher, student, distillation_losses=["soft_target_kl", hint],
                          distillation_loss_weights=[1.0, 2.0])
    distiller.compile(optimizer="adam")
    adapter = distiller.loss_states[0]
    assert isinstance(adapter, kd_losses.ProjectionAdapter) and adapter.units == 8
    kernel_before = adapter.projection.kernel.numpy().copy()
    history = distiller.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert not np.allclose(kernel_before, adapter.projection.kernel.numpy())  # the adapter was trained
    assert len(student.weights) == student_weights
    assert all("adapter" not in w.path for w in student.weights)
    path = str(tmp_path / "student.keras")
    student.save(path)
    restored = keras.models.load_model(path)
    assert len(restored.weights) == student_weights
    np.testing.assert_allclose(restored.predict(x, verbose=0), student.predict(x, verbose=0), rtol=1e-5)


def test_feature_layers_come_from_one_forward_pass(data):
    x, _ = data
    teacher, student = _cnn(8, "teacher"), _cnn(4, "student")
    distiller = Distiller(teacher, student, distillation_losses=[
        kd_losses.AttentionTransfer("teacher_conv1", "student_conv1"),
        kd_losses.FitNetsHint("teacher_conv2", "student_conv2"),
        kd_losses.SimilarityPreserving("teacher_embed", "student_embed")])
    outputs = distiller._student_outputs(tf.constant(x), training=False)
    assert set(outputs) == {"final_output", "student_conv1", "student_conv2", "student_embed"}
    np.testing.assert_allclose(outputs["final_output"], student(x), rtol=1e-5)
    t = distiller.teacher_runner(tf.constant(x))
    terms = distiller.compute_distillation_losses(tf.constant(x), None, outputs, t)
    teacher_conv1 = keras.Model(teacher.inputs, teacher.get_layer("teacher_conv1").output)(x)
    student_conv1 = keras.Model(student.inputs, student.get_layer("student_conv1").output)(x)
    expected_at = kd_losses.attention_transfer(teacher_conv1, student_conv1)
    np.testing.assert_allclose(terms["attention_transfer"], np.mean(expected_at), rtol=1e-5)


def test_layer_name_and_shape_errors_at_construction():
    teacher, student = _cnn(8, "teacher"), _cnn(4, "student")
    with pytest.raises(ValueError, match="has no layer named 'nope'"):
        Distiller(teacher, student, distillation_losses=kd_losses.FitNetsHint("nope", "student_conv1"))
    with pytest.raises(ValueError, match="has no layer named 'nope'"):
        Distiller(teacher, student, distillation_losses=kd_losses.PKT("teacher_embed", "nope"))

    inputs = keras.Input((8, 8, 1))
    pooled = keras.layers.MaxPooling2D(name="pool")(keras.layers.Conv2D(4, 3, padding="same", name="c")(inputs))
    small = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(pooled)))
    with pytest.raises(ValueError, match="spatial"):
        Distiller(teacher, small, distillation_losses=kd_losses.FitNetsHint("teacher_conv1", "pool"))
    with pytest.raises(ValueError, match=r"\(batch, H, W, C\)"):
        Distiller(teacher, student, distillation_losses=kd_losses.AttentionTransfer("teacher_embed", "student_embed"))


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(4, name="hidden")
        self.out = keras.layers.Dense(3)

    def call(self, x):
        return self.out(self.hidden(keras.ops.reshape(x, (-1, 64))))


def test_subclassed_student_with_named_layers_is_a_clear_error():
    teacher = _cnn(8, "teacher")
    student = _Subclassed()
    student(np.zeros((1, 8, 8, 1), "float32"))
    with pytest.raises(ValueError, match="subclassed model"):
        Distiller(teacher, student, distillation_losses=kd_losses.CosineAlignment("teacher_embed", "hidden"))
    # Final-output losses still work with a subclassed student.
    Distiller(teacher, student, distillation_losses="reverse_kl")


@pytest.mark.parametrize("loss", [
    kd_losses.RKDDistance("teacher_embed", "student_embed"),
    kd_losses.RKDAngle("teacher_embed", "student_embed"),
    kd_losses.PKT("teacher_conv2", "student_conv2"),
    kd_losses.CRD("teacher_embed", "student_embed", embedding_dim=8, bank_size=20),
    kd_losses.VID("teacher_conv2", "student_conv2"),
    kd_losses.CosineAlignment("teacher_embed", "student_embed"),
], ids=lambda l: l.name)
def test_relation_and_information_losses_train_in_a_distiller(loss, data):
    x, y = data
    teacher, student = _cnn(8, "teacher"), _cnn(4, "student")
    distiller = Distiller(teacher, student, distillation_losses=["soft_target_kl", loss])
    distiller.compile(optimizer="adam")
    states = list(distiller.loss_states)
    before = [w.numpy().copy() for s in states for w in s.trainable_weights]
    history = distiller.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    after = [w.numpy() for s in states for w in s.trainable_weights]
    assert all(not np.allclose(b, a) for b, a in zip(before, after))
    if isinstance(loss, kd_losses.CRD):
        assert int(states[0].bank_pointer.numpy()) == 16  # two batches of 8 written into the queue
    assert len(student.weights) == len(_cnn(4, "fresh").weights)
