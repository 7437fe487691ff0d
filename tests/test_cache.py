"""Offline distillation from cached teacher outputs."""

import os

import numpy as np
import pytest

from keras_kd.backend import keras, tf
from keras_kd.cache import CACHE_METADATA_FILE, cache_teacher_outputs
from keras_kd.distiller import Distiller
from tests.helpers import mlp, toy_data, trained_teacher

pytestmark = pytest.mark.legacy_keras


def _train(teacher, x, y, dataset=None):
    keras.utils.set_random_seed(5)
    distiller = Distiller(teacher=teacher, student=mlp(seed=3)).compile(optimizer=keras.optimizers.SGD(0.1))
    if dataset is None:
        distiller.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0)
    else:
        distiller.fit(dataset, epochs=3, verbose=0)
    return distiller.student.get_weights()


def test_cache_gives_the_same_training_without_calling_the_teacher():
    x, y = toy_data()
    teacher = trained_teacher(x, y, epochs=1)
    expected = _train(teacher, x, y)
    dataset = cache_teacher_outputs(teacher, x, y, batch_size=16, shuffle=False)

    calls = []
    original_call = teacher.call

    def counting_call(*args, **kwargs):
        calls.append(1)
        return original_call(*args, **kwargs)

    teacher.call = counting_call
    got = _train(teacher, x, y, dataset)
    assert calls == []
    for a, b in zip(expected, got):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_cache_without_labels_trains_distillation_only():
    x, y = toy_data()
    teacher = trained_teacher(x, y, epochs=1)
    dataset = cache_teacher_outputs(teacher, x, batch_size=16)
    distiller = Distiller(teacher=teacher, student=mlp(seed=3)).compile(optimizer="adam")
    history = distiller.fit(dataset, epochs=1, verbose=0)
    assert history.history["student_loss"] == [0.0]
    assert history.history["distillation_loss"][0] > 0


def test_disk_cache_is_reused_and_atomic(tmp_path):
    x, y = toy_data()
    teacher = trained_teacher(x, y, epochs=1)
    path = tmp_path / "cache"
    first = cache_teacher_outputs(teacher, x, y, batch_size=16, path=path, shuffle=False)
    assert (path / CACHE_METADATA_FILE).is_file()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".keras_kd_cache_")]

    def broken(*args, **kwargs):
        raise AssertionError("the teacher must not run again")

    teacher.call = broken
    again = cache_teacher_outputs(teacher, x, y, batch_size=16, path=path, shuffle=False)
    for a, b in zip(first, again):
        np.testing.assert_allclose(a[1]["teacher_outputs"]["final_output"].numpy(),
                                   b[1]["teacher_outputs"]["final_output"].numpy())


def test_interrupted_disk_cache_leaves_nothing(tmp_path, monkeypatch):
    x, y = toy_data()
    teacher = trained_teacher(x, y, epochs=1)

    def fail(self, path, *args, **kwargs):
        os.makedirs(path, exist_ok=True)
        open(os.path.join(path, "partial"), "w").close()
        raise KeyboardInterrupt

    monkeypatch.setattr(tf.data.Dataset, "save", fail)
    with pytest.raises(KeyboardInterrupt):
        cache_teacher_outputs(teacher, x, y, path=tmp_path / "cache")
    assert os.listdir(tmp_path) == []


def test_cache_errors(tmp_path):
    x, y = toy_data()
    teacher = trained_teacher(x, y, epochs=1)
    with pytest.raises(ValueError, match="x has 64 samples but y has 10"):
        cache_teacher_outputs(teacher, x, y[:10])
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        cache_teacher_outputs(teacher, x, y, batch_size=0)
    with pytest.raises(ValueError, match="x is empty"):
        cache_teacher_outputs(teacher, x[:0])
    (tmp_path / "other").mkdir()
    with pytest.raises(FileExistsError, match="not a complete keras_kd teacher cache"):
        cache_teacher_outputs(teacher, x, y, path=tmp_path / "other")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cache_teacher_outputs(teacher, x, y, path=tmp_path / "missing" / "cache")
    with pytest.raises(TypeError, match="teacher must be a keras.Model"):
        cache_teacher_outputs("teacher.keras", x, y)


def test_in_memory_cache_reshuffles_every_epoch_and_keeps_every_example():
    x, y = toy_data(n=40)
    teacher = mlp(seed=7)
    dataset = cache_teacher_outputs(teacher, x, y, batch_size=16, seed=1)
    logits = teacher.predict(x, verbose=0)
    orders = []
    for _ in range(2):
        batches = list(dataset)
        assert [len(b[0]) for b in batches] == [16, 16, 8]
        rows = np.concatenate([b[0].numpy() for b in batches])
        order = [int(np.flatnonzero((x == row).all(axis=1))[0]) for row in rows]
        assert sorted(order) == list(range(40))
        targets = np.concatenate([b[1]["teacher_outputs"]["final_output"].numpy() for b in batches])
        np.testing.assert_allclose(targets, logits[order], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(np.concatenate([b[1]["labels"].numpy() for b in batches]), y[order])
        orders.append(order)
    assert orders[0] != orders[1]
