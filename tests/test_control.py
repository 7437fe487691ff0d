"""keras_kd.compare_with_control: the distilled student against the same student trained without a teacher."""

import math

import numpy as np
import pytest

import keras_kd
from keras_kd.backend import keras
from keras_kd.control import CONTROL, ControlReport, _Control


def data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6, 6, 1)).astype("float32")
    y = (x[:, :3].mean(axis=(1, 2, 3)) > 0).astype("int32") + (x[:, 3:].mean(axis=(1, 2, 3)) > 0).astype("int32")
    return x, y


def student(seed):
    init = keras.initializers.GlorotUniform(seed)
    return keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(3, kernel_initializer=init)], name="student")


@pytest.fixture(scope="module")
def teacher():
    keras.utils.set_random_seed(0)
    x, y = data()
    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(3)], name="teacher")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=20, verbose=0)
    return model


def test_report_rows_seeds_and_gap(teacher):
    train, test = data(), data(64, seed=1)
    report = keras_kd.compare_with_control(
        teacher, student, train, test, seeds=(0, 1), epochs=3, batch_size=32, learning_rate=1e-2,
        augment=keras.layers.GaussianNoise(0.1), mixing="mixup",
        variants={"kd": {}, "pure": {"alpha": 1.0, "temperature": 1.0}})
    assert list(report.errors) == [CONTROL, "kd", "pure"]
    assert all(len(errors) == 2 for errors in report.errors.values())
    assert 0 <= report.teacher_errors < 64
    gap = report.mean_errors(CONTROL) - report.teacher_errors
    for name in report.errors:
        expected = (report.mean_errors(CONTROL) - report.mean_errors(name)) / gap if gap > 0 else math.nan
        assert report.gap_closed(name) == pytest.approx(expected, nan_ok=True)
    table = str(report)
    assert "control" in table and "gap closed" in table and f"teacher: {report.teacher_errors} errors" in table
    assert report.to_dict()["variants"]["kd"]["errors"] == report.errors["kd"]


def test_the_report_says_how_often_the_teacher_is_wrong_on_its_training_views(teacher):
    x, y = data()
    flipped = y.copy()
    flipped[::4] = (flipped[::4] + 1) % 3  # a quarter of the labels disagree with anything the teacher learned
    wrong = np.mean(np.argmax(teacher.predict(x, verbose=0), -1) != flipped)
    report = keras_kd.compare_with_control(teacher, student, (x, flipped), data(32, seed=1), seeds=(0,), epochs=1,
                                           batch_size=32)
    assert report.teacher_train_error_rate == pytest.approx(wrong) and wrong >= 0.2
    assert f"wrong on {wrong:.1%} of the training views" in str(report)
    assert report.to_dict()["teacher_train_error_rate"] == pytest.approx(wrong)
    # with augmentation, the views are augmented: noise as large as the data makes the teacher wrong more often
    noisy = keras_kd.compare_with_control(teacher, student, (x, y), data(32, seed=1), seeds=(0,), epochs=1,
                                          batch_size=32, augment=keras.layers.GaussianNoise(1.0))
    clean = np.mean(np.argmax(teacher.predict(x, verbose=0), -1) != y)
    assert noisy.teacher_train_error_rate > clean + 0.1


def test_the_control_and_each_variant_start_from_the_same_student(teacher, monkeypatch):
    built = []

    def recording(seed):
        model = student(seed)
        built.append((seed, model.get_weights()[0].copy()))
        return model

    keras_kd.compare_with_control(teacher, recording, data(), data(32, seed=1), seeds=(3,), epochs=1,
                                  variants={"a": {}, "b": {"alpha": 0.9}})
    assert [seed for seed, _ in built] == [3, 3, 3]
    for _, weights in built[1:]:
        np.testing.assert_array_equal(weights, built[0][1])


def test_the_control_is_trained_on_labels_and_learns(teacher):
    x, y = data(256)
    model = _Control(student(0))
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    before = np.mean(np.argmax(model.predict(x, verbose=0), -1) == y)
    model.fit(x, y, epochs=10, batch_size=32, verbose=0)
    assert np.mean(np.argmax(model.predict(x, verbose=0), -1) == y) > max(before, 0.7)


def test_gap_closed_is_nan_without_a_gap():
    report = ControlReport(num_test=10, teacher_errors=5, errors={CONTROL: [4, 4], "kd": [3, 5]},
                           seconds_per_epoch={CONTROL: 1.0, "kd": 2.0}, seeds=(0, 1), epochs=1)
    assert math.isnan(report.gap_closed("kd"))
    assert report.std_errors("kd") == pytest.approx(np.std([3, 5], ddof=1))


@pytest.mark.parametrize("kwargs, message", [
    ({"variants": {}}, "variants is empty"),
    ({"variants": {CONTROL: {}}}, "'control' is the name of the labels-only row"),
    ({"variants": {"x": 3}}, "variant 'x' must be a dict of Distiller arguments or a callable"),
    ({"seeds": ()}, "seeds is empty"),
])
def test_bad_settings_are_refused(teacher, kwargs, message):
    with pytest.raises(ValueError, match=message):
        keras_kd.compare_with_control(teacher, student, data(), data(), **kwargs)


def test_bad_data_is_refused(teacher):
    x, y = data()
    with pytest.raises(ValueError, match="train: x has 96 examples and y has 95"):
        keras_kd.compare_with_control(teacher, student, (x, y[:-1]), (x, y))
    with pytest.raises(ValueError, match="test: y must be integer class ids"):
        keras_kd.compare_with_control(teacher, student, (x, y), (x, y.astype("float32")))
    with pytest.raises(ValueError, match=r"train must be an \(x, y\) pair"):
        keras_kd.compare_with_control(teacher, student, x, (x, y))


def test_every_run_of_a_seed_sees_the_same_views(teacher):
    """The control and the Distiller of one seed get equal augmentation streams and the same mixing seed."""
    from keras_kd.control import _fresh

    shifts = keras.layers.RandomTranslation(0.3, 0.3, name="shifts")
    x = np.random.default_rng(0).random((4, 6, 6, 1)).astype("float32")
    views = []
    for _ in range(2):
        keras.utils.set_random_seed(5)
        views.append(_fresh(shifts)(x, training=True).numpy())
    np.testing.assert_array_equal(views[0], views[1])
    assert _fresh(shifts) is not shifts and _fresh(len) is len

    seeds = []
    for _ in range(2):
        keras.utils.set_random_seed(5)
        student(5)
        _fresh(shifts)
        seeds.append(int(np.random.randint(0, 2**31 - 1)))
    keras.utils.set_random_seed(5)
    distiller = keras_kd.Distiller(teacher, student(5), augment=_fresh(shifts), mixing="mixup")
    assert seeds[0] == seeds[1] == distiller._mixing_seed
