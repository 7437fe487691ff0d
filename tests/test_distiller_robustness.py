"""The Distiller on the inputs that used to give quietly wrong results (issue 11, items 1-4).

Padding ignored by Keras' own student loss, non-finite batches, a teacher that
ends in softmax, and float labels with a fractional part.
"""

import warnings

import numpy as np
import pytest

from keras_kd.backend import keras, tf
from keras_kd.distiller import Distiller
from keras_kd.losses import SoftTargetKLDivergence, TokenKLDivergence
from tests.helpers import mlp, numpy_kd, toy_data

VOCAB, SEQ = 7, 5


def _token_model(seed, hidden):
    return keras.Sequential([keras.Input((SEQ,), dtype="int32"),
                             keras.layers.Embedding(VOCAB, hidden, embeddings_initializer=keras.initializers.RandomNormal(
                                 seed=seed)),
                             keras.layers.Dense(VOCAB, kernel_initializer=keras.initializers.GlorotUniform(seed))])


def _padded_tokens(pad=-100):
    rng = np.random.default_rng(0)
    x = rng.integers(0, VOCAB, size=(8, SEQ)).astype("int32")
    y = rng.integers(1, VOCAB, size=(8, SEQ)).astype("int32")
    lengths = np.array([5, 1, 2, 3, 1, 4, 2, 1])  # more than half of the positions are padding
    y[np.arange(SEQ)[None, :] >= lengths[:, None]] = pad
    return x, y


def _token_kl_over_real_tokens(teacher, student, x, y, pad, temperature):
    mask = (y != pad).astype("float64")
    kl = numpy_kd(teacher.predict(x, verbose=0), student.predict(x, verbose=0), temperature)
    return float((kl * mask).sum() / mask.sum())


@pytest.mark.parametrize("pad", [-100, 0])
def test_keras_student_loss_with_ignore_class_averages_over_real_tokens(pad):
    x, y = _padded_tokens(pad)
    teacher, student = _token_model(1, 16), _token_model(2, 4)
    keras_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=pad)
    distiller = Distiller(teacher, student, distillation_losses=TokenKLDivergence(2.0, ignore_index=pad),
                          alpha=0.4).compile(optimizer="sgd", student_loss=keras_loss)
    logs = distiller.evaluate(x, y, batch_size=8, return_dict=True, verbose=0)
    expected_student = float(keras_loss(y, student.predict(x, verbose=0)))  # Keras' own value on this batch
    expected_kd = _token_kl_over_real_tokens(teacher, student, x, y, pad, 2.0)
    assert logs["student_loss"] == pytest.approx(expected_student, rel=1e-5)
    assert logs["distillation_loss"] == pytest.approx(expected_kd, rel=1e-5)
    assert logs["loss"] == pytest.approx(0.4 * expected_kd + 0.6 * expected_student, rel=1e-5)


def test_student_loss_function_with_ignore_class_and_sample_weights_average_over_real_tokens():
    x, y = _padded_tokens()
    teacher, student = _token_model(1, 16), _token_model(2, 4)
    expected_student = float(keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-100)(
        y, student.predict(x, verbose=0)))
    expected_kd = _token_kl_over_real_tokens(teacher, student, x, y, -100, 1.0)

    def loss_function(labels, logits):  # a plain function: its mask rides on the values, as in Keras
        return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True, ignore_class=-100)

    distiller = Distiller(teacher, student, distillation_losses=TokenKLDivergence(1.0)).compile(
        optimizer="sgd", student_loss=loss_function)
    logs = distiller.evaluate(x, y, batch_size=8, return_dict=True, verbose=0)
    assert logs["student_loss"] == pytest.approx(expected_student, rel=1e-5)
    assert logs["distillation_loss"] == pytest.approx(expected_kd, rel=1e-5)
    # A 0/1 sample weight marks the same tokens: the same means, with any student loss.
    weights = (y != -100).astype("float32")
    labels = np.where(y == -100, 0, y)
    distiller = Distiller(teacher, student, distillation_losses=TokenKLDivergence(1.0)).compile(
        optimizer="sgd", student_loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    logs = distiller.evaluate(x, labels, sample_weight=weights, batch_size=8, return_dict=True, verbose=0)
    assert logs["student_loss"] == pytest.approx(expected_student, rel=1e-5)
    assert logs["distillation_loss"] == pytest.approx(expected_kd, rel=1e-5)


def test_float_labels_with_a_fraction_are_rejected():
    x, y = toy_data(n=32)
    distiller = Distiller(mlp(seed=7), mlp(seed=3)).compile(optimizer="sgd")
    whole = distiller.evaluate(x, y.astype("float32"), verbose=0, return_dict=True)  # 2.0 is a class id
    assert np.isfinite(whole["loss"])
    fractional = y.astype("float32")
    fractional[5] = 1.7
    with pytest.raises(Exception, match="sparse labels must be whole class ids, but a float label has a "
                                        "fractional part"):
        distiller.fit(x, fractional, epochs=1, verbose=0)


def _softmax_teacher(nested=False):
    head = keras.layers.Dense(3, activation="softmax")
    if nested:
        return keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                                 keras.Sequential([keras.Input((16,)), head])], name="nested_softmax_teacher")
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), head],
                            name="softmax_teacher")


@pytest.mark.parametrize("nested", [False, True])
def test_teacher_ending_in_softmax_warns_with_the_fix(nested):
    teacher = _softmax_teacher(nested)
    with pytest.warns(UserWarning, match=rf"The teacher '{teacher.name}' ends in a softmax, so it gives "
                                         r"probabilities.*SoftTargetKLDivergence\(from_probabilities=True\)"):
        Distiller(teacher, mlp(seed=3)).compile(optimizer="sgd")
    logits_teacher = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="softmax"),
                                       keras.layers.Dense(3)])  # a softmax inside is not the output
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Distiller(logits_teacher, mlp(seed=3)).compile(optimizer="sgd")
        # A loss told that the teacher gives probabilities is the fix: no warning, and the right targets.
        distiller = Distiller(teacher, mlp(seed=3), distillation_losses=SoftTargetKLDivergence(
            2.0, from_probabilities=True), alpha=1.0).compile(optimizer="sgd")
    x, y = toy_data(n=16)
    logs = distiller.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    log_p = np.log(teacher.predict(x, verbose=0))
    expected = numpy_kd(log_p, distiller.student.predict(x, verbose=0), 2.0).mean()
    assert logs["distillation_loss"] == pytest.approx(expected, rel=1e-4)


# --------------------------------------------------------------------------- non-finite steps (item 2)
def _nan_in_second_batch():
    x, y = toy_data(n=64)
    x_bad = x.copy()
    x_bad[20, 0] = np.nan  # one NaN pixel in the second batch of 16
    return x, x_bad, y


def _relu_distiller(check_finite="raise"):
    # A ReLU student: the loss stays finite (ReLU hides the NaN), the first kernel's gradient does not.
    return Distiller(mlp(hidden=32, seed=7), mlp(hidden=8, seed=3), check_finite=check_finite).compile(
        optimizer=keras.optimizers.Adam(0.01))


def test_non_finite_gradients_stop_training_before_the_update():
    x, x_bad, y = _nan_in_second_batch()
    distiller = _relu_distiller()
    with pytest.raises(Exception, match=r"the loss or its gradients became non-finite \(NaN or inf\) at step\] "
                                        r"\[1\].*the weights were not updated by it"):
        distiller.fit(x_bad, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    after_one_step = _relu_distiller()
    after_one_step.fit(x[:16], y[:16], epochs=1, batch_size=16, shuffle=False, verbose=0)
    for a, b in zip(distiller.student.get_weights(), after_one_step.student.get_weights()):
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)  # exactly the first, clean step


def test_non_finite_steps_can_be_skipped_counted_and_warned_about():
    x, x_bad, y = _nan_in_second_batch()
    distiller = _relu_distiller("skip")
    with pytest.warns(UserWarning, match=r"skipped 1 training step\(s\) in epoch 2 because the loss or the "
                                         r"gradients were NaN or inf"):
        history = distiller.fit(x_bad, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    assert history.history["non_finite_steps"] == [1.0, 1.0]
    assert all(np.isfinite(history.history["loss"]))  # the means leave the skipped step out
    assert int(distiller.optimizer.iterations.numpy()) == 6
    # Skipping is the same as training without that batch.
    keep = np.r_[0:16, 32:64]
    reference = _relu_distiller("skip")
    reference.fit(x[keep], y[keep], epochs=2, batch_size=16, shuffle=False, verbose=0)
    for a, b in zip(distiller.student.get_weights(), reference.student.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_terminate_on_nan_still_works_and_check_finite_is_validated():
    x, x_bad, y = _nan_in_second_batch()
    x_bad[20] = np.nan  # the whole row: the loss itself becomes NaN
    distiller = Distiller(mlp(hidden=32, seed=7), mlp(hidden=0, seed=3), check_finite=False).compile(
        optimizer="sgd")
    seen = []

    class Batches(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(batch)

    distiller.fit(x_bad, y, epochs=3, batch_size=16, shuffle=False, verbose=0,
                  callbacks=[keras.callbacks.TerminateOnNaN(), Batches()])
    assert seen == [0, 1]  # TerminateOnNaN stopped fit at the NaN batch, as in Keras
    with pytest.raises(ValueError, match=r"check_finite must be 'raise' \(or True\), 'skip' or False, got 'warn'"):
        Distiller(mlp(seed=7), mlp(seed=3), check_finite="warn")
