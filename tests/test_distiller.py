"""The Distiller: loss formula, Variables, logs, keras.distillation compatibility and errors."""

import math
import warnings

import numpy as np
import pytest

from keras_kd.losses._compat import from_keras_distillation_loss
from keras_kd.backend import LEGACY_KERAS, keras, tf
from keras_kd.callbacks import TemperatureScheduler
from keras_kd.distiller import Distiller
from keras_kd.losses import SoftTargetKLDivergence, soft_target_kl_divergence
from tests.helpers import mlp, numpy_kd, toy_data, trained_teacher

pytestmark = pytest.mark.legacy_keras


@pytest.mark.parametrize(
    "teacher,student,temperature",
    [
        ([[2.0, 0.0, -2.0]], [[0.0, 0.0, 0.0]], 1.0),
        ([[2.0, 0.0, -2.0]], [[0.0, 0.0, 0.0]], 4.0),
        ([[1.0, 2.0, 3.0, 4.0]], [[4.0, 3.0, 2.0, 1.0]], 2.0),
        ([[1e4, -1e4, 0.0]], [[-1e4, 1e4, 0.0]], 1.0),
        ([[5.0, 1.0], [0.5, 0.25]], [[1.0, 5.0], [0.25, 0.5]], 0.5),
    ],
)
def test_soft_target_kl_matches_numpy(teacher, student, temperature):
    got = soft_target_kl_divergence(np.array(teacher), np.array(student), temperature).numpy()
    np.testing.assert_allclose(got, numpy_kd(teacher, student, temperature), rtol=1e-5)
    assert np.all(np.isfinite(got))


def test_extreme_logits_are_finite_at_t1():
    t = np.array([[1e4, -1e4, 3.0]], np.float32)
    s = np.array([[-1e4, 1e4, -3.0]], np.float32)
    value = soft_target_kl_divergence(t, s, 1.0).numpy()
    assert np.isfinite(value).all() and value[0] == pytest.approx(2e4, rel=1e-6)


def test_keras_distillation_default_is_fixed():
    """keras.distillation's default KL acts on raw logits; keras_kd computes the soft-target KL."""
    t = np.array([[3.0, 1.0, -2.0]], np.float32)
    s = np.array([[0.5, 2.0, 1.0]], np.float32)
    right = numpy_kd(t, s, 3.0)[0]
    if hasattr(keras, "distillation"):
        keras_value = float(keras.distillation.LogitsDistillation(temperature=3.0).compute_loss(t, s))
        assert keras_value != pytest.approx(right, rel=0.1)  # the bug this library fixes
        converted = from_keras_distillation_loss(keras.distillation.LogitsDistillation(3.0))
        assert isinstance(converted, SoftTargetKLDivergence)
        assert float(converted.compute(t, s, temperature=3.0)[0]) == pytest.approx(right, rel=1e-5)
    assert float(SoftTargetKLDivergence(temperature=3.0)(t, s)) == pytest.approx(right, rel=1e-5)


def test_gradient_scales_with_t_squared():
    """d/dz_s of T^2*KL is T*(p_s - p_t): for large T it tends to (z_s - z_t)/N, independent of T."""
    t = tf.constant([[0.3, -0.2, 0.1, 0.0]])
    s = tf.Variable([[0.1, 0.2, -0.3, 0.05]])
    norms = []
    for temperature in (5.0, 10.0, 20.0):
        with tf.GradientTape() as tape:
            value = soft_target_kl_divergence(t, s, temperature)
        norms.append(float(tf.norm(tape.gradient(value, s))))
    assert norms[0] == pytest.approx(norms[2], rel=0.02)
    with tf.GradientTape() as tape:  # without the T^2 factor the gradient would shrink as 1/T^2
        raw = soft_target_kl_divergence(t, s, 20.0) / 400.0
    assert float(tf.norm(tape.gradient(raw, s))) == pytest.approx(norms[2] / 400.0, rel=1e-5)


def _distiller(x, y, **kwargs):
    teacher = trained_teacher(x, y)
    return Distiller(teacher=teacher, student=mlp(name="student", seed=3), **kwargs)


def test_loss_formula_matches_hand_computation():
    x, y = toy_data()
    distiller = _distiller(x, y, alpha=0.3, temperature=2.5)
    distiller.compile(optimizer="sgd")
    teacher_logits = distiller.teacher.predict(x, verbose=0)
    student_logits = distiller.student.predict(x, verbose=0)
    logs = distiller.evaluate(x, y, batch_size=64, return_dict=True, verbose=0)
    kd = numpy_kd(teacher_logits, student_logits, 2.5).mean()
    ce = -np.take_along_axis(
        np.log(np.exp(student_logits) / np.exp(student_logits).sum(-1, keepdims=True)), y[:, None], 1).mean()
    assert logs["distillation_loss"] == pytest.approx(kd, rel=1e-4)
    assert logs["student_loss"] == pytest.approx(ce, rel=1e-4)
    assert logs["loss"] == pytest.approx(0.3 * kd + 0.7 * ce, rel=1e-4)


def test_fit_logs_and_chaining():
    x, y = toy_data()
    distiller = _distiller(x, y).compile(optimizer="adam", metrics=["accuracy"], alpha=0.7, temperature=4.0)
    assert isinstance(distiller, Distiller)
    history = distiller.fit(x, y, epochs=2, batch_size=16, verbose=0, validation_data=(x, y))
    for key in ("loss", "student_loss", "distillation_loss", "temperature", "alpha", "accuracy",
                "val_loss", "val_student_loss", "val_distillation_loss", "val_accuracy"):
        assert key in history.history, key
    assert history.history["temperature"] == [4.0, 4.0]
    assert history.history["alpha"][0] == pytest.approx(0.7)
    np.testing.assert_allclose(distiller.predict(x[:4], verbose=0), distiller.student.predict(x[:4], verbose=0))
    np.testing.assert_allclose(distiller(x[:4]).numpy(), distiller.student(x[:4]).numpy(), rtol=1e-6)


def test_teacher_is_frozen_and_only_student_trains():
    x, y = toy_data()
    distiller = _distiller(x, y).compile(optimizer="adam")
    before = [w.copy() for w in distiller.teacher.get_weights()]
    student_before = [w.copy() for w in distiller.student.get_weights()]
    distiller.fit(x, y, epochs=1, batch_size=16, verbose=0)
    for a, b in zip(before, distiller.teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert any(not np.allclose(a, b) for a, b in zip(student_before, distiller.student.get_weights()))
    assert not distiller.teacher.trainable


def test_variables_are_non_trainable_and_readable():
    x, y = toy_data()
    distiller = _distiller(x, y, temperature=2.0, alpha=0.25)
    assert float(distiller.temperature) == 2.0
    assert float(distiller.alpha) == 0.25
    trainable = {id(v) for v in distiller.trainable_weights}
    assert id(distiller.temperature) not in trainable and id(distiller.alpha) not in trainable


def test_changing_variables_takes_effect_without_retracing():
    traces = []

    class CountingDistiller(Distiller):
        def train_step(self, data):
            traces.append(1)  # runs only while tracing
            return super().train_step(data)

    x, y = toy_data()
    teacher = trained_teacher(x, y)
    distiller = CountingDistiller(teacher=teacher, student=mlp(seed=3)).compile(optimizer=keras.optimizers.SGD(0.0))

    traces_after_first_epoch = []

    class Change(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.model.temperature.assign([1.0, 4.0, 8.0][epoch])

        def on_epoch_end(self, epoch, logs=None):
            traces_after_first_epoch.append(len(traces))

    history = distiller.fit(x, y, epochs=3, batch_size=64, verbose=0, callbacks=[Change()])
    # tf_keras traces the first call twice (variable creation); no epoch after the first traces again.
    assert traces_after_first_epoch[0] >= 1 and traces_after_first_epoch[-1] == traces_after_first_epoch[0]
    t_logits, s_logits = teacher.predict(x, verbose=0), distiller.student.predict(x, verbose=0)
    expected = [numpy_kd(t_logits, s_logits, T).mean() for T in (1.0, 4.0, 8.0)]
    np.testing.assert_allclose(history.history["distillation_loss"], expected, rtol=1e-4)


def test_keras_distillation_constructor_and_compile_spelling():
    x, y = toy_data()
    teacher = trained_teacher(x, y)
    kwargs = {}
    if hasattr(keras, "distillation"):
        kwargs["distillation_losses"] = [keras.distillation.LogitsDistillation(temperature=2.0)]
    distiller = Distiller(teacher=teacher, student=mlp(seed=3), distillation_loss_weights=[1.0] if kwargs else None,
                          student_loss_weight=0.2, **kwargs)
    distiller.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    assert float(distiller.alpha) == pytest.approx(0.8)
    assert distiller.student_loss_weight == pytest.approx(0.2)
    history = distiller.fit(x, y, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_feature_loss_and_taps_use_one_student_forward():
    x, y = toy_data()
    teacher = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu", name="t_hidden"),
                                keras.layers.Dense(3)])
    calls = []

    class CountingDense(keras.layers.Dense):
        def call(self, inputs):
            calls.append(1)
            return super().call(inputs)

    student = keras.Sequential([keras.Input((8,)), CountingDense(16, activation="relu", name="s_hidden"),
                                keras.layers.Dense(3)])
    losses = [SoftTargetKLDivergence()]
    if hasattr(keras, "distillation"):
        losses.append(keras.distillation.FeatureDistillation("mse", "t_hidden", "s_hidden"))
    distiller = Distiller(teacher=teacher, student=student, distillation_losses=losses).compile(optimizer="sgd")
    calls.clear()
    distiller.train_step((tf.constant(x[:8]), tf.constant(y[:8])))
    assert len(calls) == 1


def test_config_round_trip():
    x, y = toy_data()
    distiller = _distiller(x, y, alpha=0.4, temperature=5.0, distillation_losses=[SoftTargetKLDivergence(5.0)])
    config = distiller.get_config()
    clone = Distiller.from_config(config)
    assert clone.get_config()["alpha"] == pytest.approx(0.4)
    assert float(clone.temperature) == 5.0
    assert [type(l) for l in clone.distillation_losses] == [SoftTargetKLDivergence]
    assert clone.student.count_params() == distiller.student.count_params()


def test_mixed_precision_losses_stay_float32():
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        x, y = toy_data()
        teacher = mlp(hidden=16, seed=5)
        student = mlp(seed=3)
        distiller = Distiller(teacher=teacher, student=student).compile(optimizer="adam")
        x_big = (x * 1e3).astype("float32")
        history = distiller.fit(x_big, y, epochs=1, batch_size=16, verbose=0)
        assert all(np.isfinite(v[0]) for v in history.history.values())
    finally:
        keras.mixed_precision.set_global_policy(policy)


def test_teacher_in_bfloat16_agrees_with_float32():
    x, y = toy_data(n=128)
    teacher = trained_teacher(x, y)
    distiller = Distiller(teacher=teacher, student=mlp(seed=3), teacher_dtype="bfloat16").compile(optimizer="adam")
    # fit first: the bfloat16 copy of the teacher is then made while fit traces the train step
    history = distiller.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    reduced = distiller.teacher_runner(tf.constant(x))["final_output"].numpy()
    full = teacher.predict(x, verbose=0)
    assert reduced.dtype == np.float32
    assert np.mean(reduced.argmax(1) == full.argmax(1)) >= 0.95


# --------------------------------------------------------------------------- errors
def test_error_output_shapes_differ():
    x, y = toy_data()
    teacher = trained_teacher(x, y)
    with pytest.raises(ValueError, match=r"teacher gives \(None, 3\) and the student \(None, 5\)"):
        Distiller(teacher=teacher, student=mlp(classes=5)).compile()


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_error_alpha_out_of_range(alpha):
    x, y = toy_data()
    with pytest.raises(ValueError, match="alpha must be a number in \\[0, 1\\]"):
        _distiller(x, y, alpha=alpha)


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_error_bad_temperature(temperature):
    x, y = toy_data()
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        _distiller(x, y, temperature=temperature)
    distiller = _distiller(x, y)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        distiller.compile(temperature=temperature)


def test_error_teacher_not_built():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    x, y = toy_data()
    # Constructing is allowed (keras.distillation allows it, and load_model rebuilds one before its weights);
    # teaching with random weights is not: fit, evaluate and the teacher cache stop before the first call.
    distiller = Distiller(teacher=Sub(), student=mlp()).compile(optimizer="sgd")
    with pytest.raises(ValueError, match="is not built .* random weights"):
        distiller.fit(x, y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="is not built"):
        distiller.evaluate(x, y, verbose=0)
    assert not distiller.teacher.built
    from keras_kd.cache import cache_teacher_outputs

    with pytest.raises(ValueError, match="is not built"):
        cache_teacher_outputs(Sub(), x, y)
    with pytest.raises(ValueError, match="is not built"):
        cache_teacher_outputs(distiller, x, y)


def test_error_not_a_model_is_type_and_value_error():
    """keras.distillation raises ValueError here; TypeError is the Python convention: both catch it."""
    for teacher, student in (("not_a_model", mlp()), (mlp(), "not_a_model")):
        with pytest.raises(TypeError, match="must be a keras.Model, got str"):
            Distiller(teacher=teacher, student=student)
        with pytest.raises(ValueError, match="must be a keras.Model, got str"):
            Distiller(teacher=teacher, student=student)


def test_error_same_object():
    model = mlp()
    with pytest.raises(ValueError, match="same model object"):
        Distiller(teacher=model, student=model)


def test_error_alpha_and_student_loss_weight():
    x, y = toy_data()
    with pytest.raises(ValueError, match="not both"):
        _distiller(x, y, alpha=0.5, student_loss_weight=0.5)
    distiller = _distiller(x, y, student_loss_weight=0.5)
    with pytest.raises(ValueError, match="student_loss_weight"):
        distiller.compile(alpha=0.3)


def test_error_labels_out_of_range():
    x, y = toy_data()
    distiller = _distiller(x, y).compile(optimizer="adam")
    bad = y.copy()
    bad[3] = 7
    with pytest.raises(Exception, match=r"labels must be class ids in \[0, 3\)"):
        distiller.fit(x, bad, epochs=1, verbose=0)


def test_error_labels_wrong_rank():
    x, y = toy_data()
    distiller = _distiller(x, y).compile(optimizer="adam")
    with pytest.raises(ValueError, match=r"Labels of shape .* do not fit student outputs"):
        distiller.fit(x, np.stack([y, y, y, y], axis=1).reshape(-1, 2, 2), epochs=1, verbose=0)


def test_error_non_finite_loss_names_step():
    x, y = toy_data()
    # A linear student: a ReLU would turn the NaN input into 0 and hide it.
    distiller = Distiller(teacher=trained_teacher(x, y), student=mlp(hidden=0)).compile(optimizer="adam")
    x_bad = x.copy()
    x_bad[20] = np.nan  # second batch of 16
    with pytest.raises(Exception, match=r"non-finite \(NaN or inf\) at step\] \[1\]"):
        distiller.fit(x_bad, y, epochs=1, batch_size=16, verbose=0, shuffle=False)


def test_error_unknown_layer_name():
    x, y = toy_data()
    teacher = trained_teacher(x, y)
    loss = SoftTargetKLDivergence(teacher_layer_name="nope")
    with pytest.raises(ValueError, match="has no layer named 'nope'"):
        Distiller(teacher=teacher, student=mlp(), distillation_losses=[loss])


def test_error_losses_set_twice():
    x, y = toy_data()
    distiller = _distiller(x, y, distillation_losses=[SoftTargetKLDivergence()])
    with pytest.raises(ValueError, match="already set"):
        distiller.compile(distillation_loss=SoftTargetKLDivergence())


def test_student_softmax_warns():
    x, y = toy_data()
    teacher = trained_teacher(x, y)
    student = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, activation="softmax")])
    with pytest.warns(UserWarning, match="ends in a softmax"):
        Distiller(teacher=teacher, student=student)


def test_legacy_flag_matches_environment():
    import os

    assert LEGACY_KERAS == (os.environ.get("TF_USE_LEGACY_KERAS", "0") in ("1", "true", "yes", "on"))
    assert math.isfinite(1.0)


def test_logs_hold_total_loss_as_keras_distillation_does():
    x, y = toy_data()
    distiller = _distiller(x, y).compile(optimizer="adam")
    history = distiller.fit(x, y, epochs=1, verbose=0, validation_data=(x, y))
    assert history.history["total_loss"] == history.history["loss"]
    assert history.history["val_total_loss"] == history.history["val_loss"]


def test_weights_read_back_as_given():
    """float32 Variables hold 0.7 as 0.699999988; the properties give back the Python values."""
    x, y = toy_data()
    distiller = _distiller(x, y, student_loss_weight=0.7,
                           distillation_losses=[SoftTargetKLDivergence(), SoftTargetKLDivergence(name="kl2")],
                           distillation_loss_weights=[0.7, 0.3])
    assert distiller.student_loss_weight == 0.7
    assert distiller.distillation_loss_weights == [0.7, 0.3]
    assert distiller.get_config()["student_loss_weight"] == 0.7 and "alpha" not in distiller.get_config()
    distiller.alpha.assign(0.5)  # a scheduler moved it: the property follows the Variable
    distiller.distillation_loss_weight_variables[1].assign(0.25)
    assert distiller.student_loss_weight == 0.5
    assert distiller.distillation_loss_weights == [0.7, 0.25]


@pytest.mark.skipif(not hasattr(keras, "distillation"), reason="keras.distillation needs Keras >= 3.12")
def test_keras_distillation_objects_are_kept_as_given():
    x, y = toy_data()
    given = keras.distillation.LogitsDistillation(temperature=2.0)
    distiller = _distiller(x, y, distillation_losses=given)
    assert distiller.distillation_losses == [given]
    assert distiller.distillation_loss_names == ["soft_target_kl"]
    clone = Distiller.from_config(distiller.get_config())
    assert isinstance(clone.distillation_losses[0], keras.distillation.LogitsDistillation)
    assert clone.distillation_losses[0].temperature == 2.0 and float(clone.temperature) == 2.0


def test_losses_at_different_temperatures_keep_their_own():
    x, y = toy_data()
    losses = [SoftTargetKLDivergence(temperature=2.0, name="kl_t2"), SoftTargetKLDivergence(temperature=4.0, name="kl_t4")]
    distiller = _distiller(x, y, distillation_losses=losses, alpha=1.0).compile(optimizer="sgd")
    assert float(distiller.temperature) == 2.0
    t_logits, s_logits = distiller.teacher.predict(x, verbose=0), distiller.student.predict(x, verbose=0)
    logs = distiller.evaluate(x, y, batch_size=64, return_dict=True, verbose=0)
    np.testing.assert_allclose(logs["distillation_loss"], numpy_kd(t_logits, s_logits, 2.0).mean()
                               + numpy_kd(t_logits, s_logits, 4.0).mean(), rtol=1e-4)
    assert [float(v) for v in distiller.temperature_variables] == [2.0, 4.0]
    assert distiller.temperature_variables[0] is distiller.temperature
    scheduler = TemperatureScheduler(lambda epoch: 3.0)  # a schedule scales both, keeping the ratio 2
    scheduler.set_model(distiller)
    scheduler.on_epoch_begin(0)
    assert [float(v) for v in distiller.temperature_variables] == [3.0, 6.0]
    logs = distiller.evaluate(x, y, batch_size=64, return_dict=True, verbose=0)
    np.testing.assert_allclose(logs["distillation_loss"], numpy_kd(t_logits, s_logits, 3.0).mean()
                               + numpy_kd(t_logits, s_logits, 6.0).mean(), rtol=1e-4)
    clone = Distiller.from_config(distiller.get_config())  # the same per-loss temperatures after a round trip
    assert [float(v) for v in clone.temperature_variables] == [2.0, 4.0]
    distiller.compile(optimizer="sgd", temperature=5.0)  # an explicit temperature applies to every loss
    logs = distiller.evaluate(x, y, batch_size=64, return_dict=True, verbose=0)
    np.testing.assert_allclose(logs["distillation_loss"], 2 * numpy_kd(t_logits, s_logits, 5.0).mean(), rtol=1e-4)


@pytest.mark.skipif(LEGACY_KERAS, reason="the .keras whole-model format with compile config is Keras 3's")
def test_saved_distiller_loads_compiled_and_resumes(tmp_path):
    x, y = toy_data()
    distiller = _distiller(x, y, alpha=0.6).compile(
        optimizer=keras.optimizers.Adam(0.01), metrics=["accuracy"],
        student_loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    distiller.fit(x, y, epochs=1, batch_size=16, verbose=0)
    path = str(tmp_path / "d.keras")
    distiller.save(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = keras.saving.load_model(path)
    # The teacher was compiled and trained before distillation: its optimizer state loads too, silently.
    assert not [str(w.message) for w in caught if "Skipping variable loading" in str(w.message)]
    for a, b in zip(distiller.teacher.optimizer.variables, loaded.teacher.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert len(loaded.teacher.optimizer.variables) == len(distiller.teacher.optimizer.variables) > 2
    assert not loaded.teacher.trainable
    assert loaded.compiled and isinstance(loaded.optimizer, keras.optimizers.Adam)
    assert isinstance(loaded._student_loss_fn, keras.losses.SparseCategoricalCrossentropy)
    assert float(loaded.alpha.numpy()) == pytest.approx(0.6)
    assert int(loaded.optimizer.iterations.numpy()) == int(distiller.optimizer.iterations.numpy())
    # One more epoch from the loaded copy equals one more epoch of the original (optimizer slots included).
    distiller.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    loaded.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    for a, b in zip(distiller.student.get_weights(), loaded.student.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- numbers (issue 11, item 8)
@pytest.mark.parametrize("number", [np.float32, np.float64, np.array])
def test_numpy_scalars_are_accepted_wherever_a_number_is(number):
    from keras_kd import schedules
    from keras_kd.callbacks import LossWeightScheduler

    distiller = Distiller(teacher=mlp(seed=7), student=mlp(seed=3), alpha=number(0.25), temperature=number(4),
                          distillation_losses=[SoftTargetKLDivergence(number(2.0))],
                          distillation_loss_weights=[number(1.0)])
    assert float(distiller.temperature) == 4.0 and distiller.get_config()["alpha"] == 0.25
    distiller.compile(optimizer="sgd", alpha=number(0.75), temperature=number(2.0),
                      distillation_loss_weights=[number(0.5)])
    assert float(distiller.temperature) == 2.0 and distiller.distillation_loss_weights == [0.5]
    keras_style = Distiller(teacher=mlp(seed=7), student=mlp(seed=3), student_loss_weight=number(0.25))
    assert keras_style.student_loss_weight == 0.25
    assert schedules.Linear(number(4.0), number(1.0), steps=np.int64(3))(3) == 1.0
    assert schedules.get(number(2.0))(5) == 2.0
    assert LossWeightScheduler(np.int64(0), 1.0)._index(distiller) == 0
    with pytest.raises(ValueError, match="temperature must be a finite number > 0, got np.float32"):
        SoftTargetKLDivergence(np.float32(-1.0))  # a NumPy scalar is checked, not waved through


def test_error_messages_say_what_each_weight_weights():
    with pytest.raises(ValueError, match=r"got '0.5' \(a str\)\. It weights the distillation term"):
        Distiller(teacher=mlp(seed=7), student=mlp(seed=3), alpha="0.5")
    with pytest.raises(ValueError, match=r"student_loss_weight must be a number in \[0, 1\], got 1.5\. It weights "
                                         r"the student term: loss = student_loss_weight \* student_loss"):
        Distiller(teacher=mlp(seed=7), student=mlp(seed=3), student_loss_weight=1.5)
    with pytest.raises(ValueError, match=r"temperature must be a finite number > 0, got True \(a bool\)"):
        Distiller(teacher=mlp(seed=7), student=mlp(seed=3), temperature=True)


@pytest.mark.skipif(LEGACY_KERAS, reason="the .keras whole-model format with compile config is Keras 3's")
def test_loading_a_never_trained_distiller_warns_nothing(tmp_path):
    """Saved before any step, the optimizers have no slots: loading must not build them and then skip them."""
    x, _ = toy_data(n=8)
    teacher = mlp(hidden=32, seed=7)
    teacher.compile(optimizer="adam", loss="mse")  # compiled, never trained
    distiller = Distiller(teacher=teacher, student=mlp(seed=3)).compile(optimizer="adam")
    distiller(x)
    path = str(tmp_path / "fresh.keras")
    distiller.save(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = keras.saving.load_model(path)
    assert not [str(w.message) for w in caught if "Skipping variable loading" in str(w.message)]
    assert loaded.compiled and not loaded.optimizer.built and not loaded.teacher.optimizer.built
