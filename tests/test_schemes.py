"""Schemes: born-again generations, teacher-assistant chains, deep mutual learning."""

import numpy as np
import pytest

from keras_kd import schemes
from keras_kd.backend import keras, tf


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int32") + (x[:, 2] > 1).astype("int32")
    return x, y


def _mlp(hidden, seed, name):
    init = keras.initializers.GlorotUniform(seed)
    layers = [keras.Input((6,))]
    if hidden:
        layers.append(keras.layers.Dense(hidden, activation="relu", kernel_initializer=init))
    layers.append(keras.layers.Dense(3, kernel_initializer=keras.initializers.GlorotUniform(seed + 100)))
    return keras.Sequential(layers, name=name)


def _accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))


@pytest.fixture
def teacher():
    x, y = _data()
    model = _mlp(32, 1, "teacher")
    model.compile(keras.optimizers.Adam(0.02), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=15, verbose=0)
    return model


@pytest.mark.slow
def test_born_again_trains_each_generation_from_the_previous(teacher):
    x, y = _data()
    built = []

    def make_student():
        built.append(_mlp(16, 10 + len(built), f"gen{len(built) + 1}"))
        return built[-1]

    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append(self.model.student.name)

    students, histories = schemes.born_again(make_student, teacher, (x, y), generations=2, epochs=8, batch_size=32,
                                             optimizer=keras.optimizers.Adam(0.02), alpha=0.7, callbacks=[Record()])
    assert students == built and len(students) == 2
    assert seen == ["gen1", "gen2"]  # the callbacks ran in every generation's fit
    assert [len(h.history["loss"]) for h in histories] == [8, 8]
    for student in students:
        assert _accuracy(student, x, y) > 0.7
    assert teacher.trainable is False  # the Distiller froze it
    with pytest.raises(ValueError, match="generations must be an int >= 1"):
        schemes.born_again(make_student, teacher, (x, y), generations=0)
    with pytest.raises(TypeError, match="factory"):
        schemes.born_again(_mlp(4, 0, "m"), teacher, (x, y))


@pytest.mark.slow
def test_teacher_assistant_chain_returns_trained_models_in_order(teacher):
    x, y = _data()
    assistant, student = _mlp(16, 3, "assistant"), _mlp(0, 4, "student")
    student_before = [w.numpy().copy() for w in student.weights]
    chain, histories = schemes.teacher_assistant_chain(teacher, assistant, student, tf.data.Dataset.from_tensor_slices(
        (x, y)).batch(32), epochs=8, optimizer=lambda: keras.optimizers.Adam(0.02),
        callbacks=[keras.callbacks.History()])
    assert len(histories) == 2 and all(isinstance(h, keras.callbacks.History) for h in histories)
    assert chain[0] is assistant and chain[1] is student
    assert not assistant.trainable  # it was frozen when it taught the student
    assert any(not np.allclose(b, a.numpy()) for b, a in zip(student_before, student.weights))
    assert _accuracy(assistant, x, y) > 0.7 and _accuracy(student, x, y) > 0.6
    with pytest.raises(ValueError, match="distinct"):
        schemes.teacher_assistant_chain(teacher, [assistant], assistant, (x, y))


def test_mutual_learning_losses_match_the_formula():
    x, y = _data(8)
    a, b, c = _mlp(8, 1, "a"), _mlp(0, 2, "b"), _mlp(4, 3, "c")
    model = schemes.MutualLearning([a, b, c], temperature=2.0)
    logits = [m(x) for m in (a, b, c)]
    per_student = model._peer_losses(tf.constant(y), logits)

    def log_softmax(z):
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    z = [l.numpy() for l in logits]
    for k in range(3):
        ce = -log_softmax(z[k])[np.arange(8), y].mean()
        kl = np.mean([4.0 * (np.exp(log_softmax(z[j] / 2)) * (log_softmax(z[j] / 2) - log_softmax(z[k] / 2))
                             ).sum(-1).mean() for j in range(3) if j != k])
        np.testing.assert_allclose(per_student[k][1], ce, rtol=1e-5)
        np.testing.assert_allclose(per_student[k][2], kl, rtol=1e-5)
        np.testing.assert_allclose(per_student[k][0], ce + kl, rtol=1e-5)
    with pytest.raises(ValueError, match="at least two students"):
        schemes.MutualLearning([a])
    with pytest.raises(ValueError, match="same model object twice"):
        schemes.MutualLearning([a, a])


@pytest.mark.slow
def test_mutual_learning_improves_both_students_and_logs_the_kl_term():
    x, y = _data()
    a, b = _mlp(16, 5, "peer_a"), _mlp(8, 6, "peer_b")
    before = (_accuracy(a, x, y), _accuracy(b, x, y))
    (a2, b2), (history,) = schemes.mutual_learning([a, b], (x, y), epochs=10, batch_size=32,
                                                   optimizer=keras.optimizers.Adam(0.02), metrics=["accuracy"])
    assert a2 is a and b2 is b
    logs = history.history
    for k, model in enumerate((a, b)):  # each student's own accuracy, under its own key
        assert logs[f"student_{k}_accuracy"][-1] == pytest.approx(_accuracy(model, x, y), abs=0.05)
    for k in (0, 1):
        assert logs[f"student_{k}_loss"][-1] < logs[f"student_{k}_loss"][0]
        assert all(v > 0 for v in logs[f"student_{k}_kl"])  # the peer term is present
        np.testing.assert_allclose(logs[f"student_{k}_loss"],
                                   np.add(logs[f"student_{k}_ce"], logs[f"student_{k}_kl"]), rtol=1e-4)
    after = (_accuracy(a, x, y), _accuracy(b, x, y))
    assert after[0] > before[0] + 0.1 and after[1] > before[1] + 0.1
    assert after[0] > 0.75 and after[1] > 0.75


def test_mutual_learning_logs_each_students_metrics_under_its_own_key():
    x, y = _data(64)
    strong, weak = _mlp(16, 5, "strong"), _mlp(0, 6, "weak")
    model = schemes.MutualLearning([strong, weak]).compile(
        optimizer=keras.optimizers.SGD(0.0), metrics=["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(k=2)])
    strong.set_weights([w * 0 for w in strong.get_weights()])  # predicts class 0 everywhere
    logs = model.evaluate(x, y, batch_size=64, return_dict=True, verbose=0)
    for k, student in enumerate((strong, weak)):
        assert logs[f"student_{k}_accuracy"] == pytest.approx(_accuracy(student, x, y), abs=1e-6)
        assert f"student_{k}_sparse_top_k_categorical_accuracy" in logs
    assert "accuracy" not in logs
    assert logs["student_0_accuracy"] != logs["student_1_accuracy"]


def test_every_scheme_returns_models_and_histories(teacher):
    x, y = _data(32)
    data = (x, y)
    results = [
        schemes.born_again(lambda: _mlp(4, 20, "g"), teacher, data, generations=1, epochs=1),
        schemes.teacher_assistant_chain(teacher, [_mlp(4, 21, "ta")], _mlp(0, 22, "s"), data, epochs=1),
        schemes.mutual_learning([_mlp(4, 23, "p"), _mlp(0, 24, "q")], data, epochs=1),
    ]
    for models, histories in results:
        assert all(isinstance(m, keras.Model) for m in models)
        assert histories and all(isinstance(h, keras.callbacks.History) for h in histories)
        assert all(len(h.history["loss"]) == 1 for h in histories)
