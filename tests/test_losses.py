"""Distillation losses: golden values hand-computed in NumPy, config round-trips, shapes, the public surface."""

import numpy as np
import pytest

from keras_kd import losses as kd_losses
from keras_kd.backend import keras, tf

# ----------------------------------------------------------------- NumPy references


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _softmax(z):
    return np.exp(_log_softmax(z))


def np_soft_kl(t, s, T):
    pt, lt, ls = _softmax(t / T), _log_softmax(t / T), _log_softmax(s / T)
    return T * T * (pt * (lt - ls)).sum(-1)


def np_reverse_kl(t, s, T):
    ps, lt, ls = _softmax(s / T), _log_softmax(t / T), _log_softmax(s / T)
    return T * T * (ps * (ls - lt)).sum(-1)


def np_logit_mse(t, s):
    return ((t - s) ** 2).mean(-1)


def np_dkd(t, s, y, T, alpha, beta):
    out = []
    for ti, si, yi in zip(t, s, y):
        pt, ps = _softmax(ti / T), _softmax(si / T)
        bt, bs = np.array([pt[yi], 1 - pt[yi]]), np.array([ps[yi], 1 - ps[yi]])
        tckd = (bt * np.log(bt / bs)).sum()
        keep = np.arange(len(ti)) != yi
        qt, qs = _softmax(ti[keep] / T), _softmax(si[keep] / T)
        nckd = (qt * np.log(qt / qs)).sum()
        out.append(T * T * (alpha * tckd + beta * nckd))
    return np.array(out)


def np_fitnets(t, s):
    return ((t - s) ** 2).reshape(len(t), -1).mean(-1)


def np_attention(t, s, p=2.0):
    def q(a):
        m = (np.abs(a) ** p).sum(-1).reshape(len(a), -1)
        return m / np.linalg.norm(m, axis=1, keepdims=True)

    return ((q(s) - q(t)) ** 2).mean(-1)


def np_cosine(t, s):
    return 1 - (t * s).sum(-1) / np.linalg.norm(t, axis=-1) / np.linalg.norm(s, axis=-1)


def _huber(x):
    a = np.abs(x)
    return np.where(a < 1, 0.5 * x * x, a - 0.5)


def _distances(e):
    return np.array([[np.linalg.norm(a - b) for b in e] for a in e])


def np_rkd_distance(t, s):
    t, s = t.reshape(len(t), -1), s.reshape(len(s), -1)
    dt, ds = _distances(t), _distances(s)
    return _huber(ds / ds[ds > 0].mean() - dt / dt[dt > 0].mean()).mean()


def _angles(e):
    b = len(e)
    out = np.zeros((b, b, b))
    for i in range(b):
        for j in range(b):
            for k in range(b):
                u, v = e[j] - e[i], e[k] - e[i]
                if np.linalg.norm(u) > 0 and np.linalg.norm(v) > 0:
                    out[i, j, k] = u @ v / np.linalg.norm(u) / np.linalg.norm(v)
    return out


def np_rkd_angle(t, s):
    return _huber(_angles(s.reshape(len(s), -1)) - _angles(t.reshape(len(t), -1))).mean()


def np_pkt(t, s, eps=1e-7):
    def cond(e):
        e = e.reshape(len(e), -1)
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        k = (e @ e.T + 1) / 2
        return k / k.sum(1, keepdims=True)

    pt, ps = cond(t), cond(s)
    return (pt * np.log((pt + eps) / (ps + eps))).sum(1).mean()


def np_sp(t, s):
    def g(e):
        e = e.reshape(len(e), -1)
        m = e @ e.T
        return m / np.linalg.norm(m, axis=1, keepdims=True)

    return ((g(t) - g(s)) ** 2).sum() / len(t) ** 2


def np_multi_teacher(t, s, T, w):
    w = np.array(w, float) / np.sum(w)
    p_bar = sum(wk * _softmax(t[:, k] / T) for k, wk in enumerate(w))
    return T * T * (p_bar * (np.log(p_bar) - _log_softmax(s / T))).sum(-1)


def np_vid(t, mu, var):
    nll = 0.5 * (np.log(var) + (t - mu) ** 2 / var)
    return nll.reshape(len(t), -1).mean(-1)


def np_info_nce(s, t, bank_t, bank_s, tau):
    s = s / np.linalg.norm(s, axis=1, keepdims=True)
    t = t / np.linalg.norm(t, axis=1, keepdims=True)

    def side(a, p, bank):
        logits = np.concatenate([a @ p.T, a @ bank.T], axis=1) / tau
        return -np.diag(_log_softmax(logits))

    return side(s, t, bank_t) + side(t, s, bank_s)


_R = np.random.default_rng(7)
T3, S3 = _R.normal(size=(4, 5)) * 3, _R.normal(size=(4, 5)) * 3
Y3 = np.array([0, 3, 4, 1])
FT, FS = _R.normal(size=(4, 3, 3, 6)), _R.normal(size=(4, 3, 3, 4))
ET, ES = _R.normal(size=(5, 6)), _R.normal(size=(5, 3))

def case(*args, expected, batch_mean=False, **kwargs):
    """One golden case: the loss's `function(*args, **kwargs)` against a NumPy `expected` (its batch mean if asked)."""
    return args, kwargs, expected, batch_mean


# Registered name -> {case: golden case of that loss's `function`}. Every registered loss needs a row here
# (test_golden_values fails otherwise); the keys also pin the registered names.
GOLDEN = {
    "soft_target_kl": {"": case(T3, S3, 2.0, expected=np_soft_kl(T3, S3, 2.0))},
    "reverse_kl": {
        "": case(T3, S3, 2.0, expected=np_reverse_kl(T3, S3, 2.0)),
        "probs": case(_softmax(T3), S3, 3.0, from_probabilities=True, expected=np_reverse_kl(T3, S3, 3.0)),
    },
    "logit_mse": {"": case(T3, S3, expected=np_logit_mse(T3, S3))},
    "dkd": {
        "": case(T3, S3, Y3, 4.0, 1.0, 8.0, expected=np_dkd(T3, S3, Y3, 4.0, 1.0, 8.0)),
        "onehot_probs": case(_softmax(T3), S3, np.eye(5)[Y3], 2.0, 0.5, 2.0, from_probabilities=True,
                             expected=np_dkd(T3, S3, Y3, 2.0, 0.5, 2.0)),
    },
    "regression_mse": {"": case(T3, S3, expected=np_logit_mse(T3, S3))},
    "token_kl": {"": case(T3[None], S3[None], 2.0, expected=np_soft_kl(T3, S3, 2.0)[None])},
    "fitnets": {"": case(FT[..., :4], FS, expected=np_fitnets(FT[..., :4], FS))},
    "attention_transfer": {
        "": case(FT, FS, expected=np_attention(FT, FS)),
        "p1": case(FT, FS, p=1.0, expected=np_attention(FT, FS, 1.0)),
    },
    "cosine_alignment": {"": case(ET[:, :3], ES, expected=np_cosine(ET[:, :3], ES))},
    "rkd_distance": {"": case(ET, ES, expected=np_rkd_distance(ET, ES), batch_mean=True)},
    "rkd_angle": {"": case(ET, ES, expected=np_rkd_angle(ET, ES), batch_mean=True)},
    "pkt": {"": case(FT, FS, expected=np_pkt(FT, FS), batch_mean=True)},
    "similarity_preserving": {"": case(FT, FS, expected=np_sp(FT, FS), batch_mean=True)},
    "multi_teacher_kl": {"": case(np.stack([T3, S3 * 2], 1), S3, 2.5, [3, 1],
                                  expected=np_multi_teacher(np.stack([T3, S3 * 2], 1), S3, 2.5, [3, 1]))},
    "vid": {"": case(FT, FT * 0.5, np.linspace(0.5, 2, 6), expected=np_vid(FT, FT * 0.5, np.linspace(0.5, 2, 6)))},
    "crd": {"": case(ES, ET[:, :3], ET[:3, 3:], ES[:3], 0.5,
                     expected=np_info_nce(ES, ET[:, :3], ET[:3, 3:], ES[:3], 0.5))},
    "input_gradient": {"": case(FT, FT * 0.5, expected=((FT * 0.5) ** 2).reshape(4, -1).sum(-1))},
}

# keras_kd's own losses (a user's @register_loss class is not this suite's to check).
REGISTERED = [name for name in kd_losses.registered_names()
              if type(kd_losses.get(name)).__module__.startswith("keras_kd.losses.")]


def _check_golden(values, expected, batch_mean, where):
    values = np.asarray(values)
    assert values.dtype == np.float32, where
    if batch_mean:
        assert values.shape == (ET.shape[0],) or values.shape == (FT.shape[0],), where
        np.testing.assert_allclose(values.mean(), expected, rtol=1e-4, atol=1e-6, err_msg=where)
    else:
        np.testing.assert_allclose(values, expected, rtol=1e-4, atol=1e-6, err_msg=where)


@pytest.mark.parametrize("name", REGISTERED)
def test_golden_values(name):
    if name not in GOLDEN:
        pytest.fail(f"The registered loss {name!r} has no golden row: add hand-computed NumPy values for its "
                    "function to GOLDEN in tests/test_losses.py.")
    function = type(kd_losses.get(name)).function
    assert function is not None, f"{name!r} declares no `function = staticmethod(...)`"
    assert getattr(kd_losses, function.__name__) is function, f"{function.__name__} is not exported"
    for label, (args, kwargs, expected, batch_mean) in GOLDEN[name].items():
        _check_golden(function(*args, **kwargs), expected, batch_mean, f"{name} {label}".strip())


def test_golden_rows_are_registered_losses():
    assert sorted(GOLDEN) == REGISTERED


def test_regression_kd_objective_golden():
    _check_golden(kd_losses.regression_kd_objective(T3[:, :1], T3[:, 1:2], S3[:, :1], 0.3, 2.0),
                  0.3 * (T3[:, 0] - S3[:, 0]) ** 2 + 2.0 * (T3[:, 1] - S3[:, 0]) ** 2, False, "regression_kd_objective")


def test_multi_teacher_equal_weights_is_mean_of_softened_probabilities():
    t = np.stack([T3, -T3, S3], axis=1)
    got = kd_losses.multi_teacher_kl_divergence(t, S3, 4.0)
    np.testing.assert_allclose(got, np_multi_teacher(t, S3, 4.0, [1, 1, 1]), rtol=1e-4)
    # Averaging probabilities first and softening afterwards is a different (wrong) target.
    wrong = np_soft_kl(np.log(np.mean([_softmax(t[:, k]) for k in range(3)], 0)), S3, 4.0)
    assert not np.allclose(got, wrong, rtol=1e-3)


def test_dkd_equals_classic_kd_decomposition():
    # KD = TCKD + (1 - p_t,y) * NCKD (Zhao et al., eq. 3): check with alpha=1 and beta=(1 - p_t,y) per example.
    T = 2.0
    p_ty = _softmax(T3 / T)[np.arange(4), Y3]
    tckd = np.asarray(kd_losses.decoupled_kd(T3, S3, Y3, T, 1.0, 0.0))
    nckd = np.asarray(kd_losses.decoupled_kd(T3, S3, Y3, T, 0.0, 1.0))
    np.testing.assert_allclose(tckd + (1 - p_ty) * nckd, np_soft_kl(T3, S3, T), rtol=1e-4)


def test_dkd_ignores_padding_labels():
    values = np.asarray(kd_losses.decoupled_kd(T3, S3, np.array([0, -100, 4, 1]), 2.0))
    assert np.isfinite(values).all()


def test_response_losses_are_stable_for_huge_logits():
    t = np.array([[1e4, -1e4, 0.0]]); s = np.array([[-1e4, 1e4, 0.0]])
    for fn in (kd_losses.soft_target_kl_divergence, kd_losses.reverse_kl_divergence):
        assert np.isfinite(np.asarray(fn(t, s, 1.0))).all()
    assert np.isfinite(np.asarray(kd_losses.decoupled_kd(t, s, np.array([0]), 1.0))).all()


# ------------------------------------------------------------------- token masking

def test_token_kl_padding_positions_change_nothing_and_mean_is_over_real_tokens():
    rng = np.random.default_rng(3)
    t, s = rng.normal(size=(2, 4, 6)), rng.normal(size=(2, 4, 6))
    labels = np.array([[1, 2, -100, -100], [3, 0, 5, -100]])
    loss = kd_losses.TokenKLDivergence(temperature=2.0)
    clean = np.asarray(loss.compute(t, s, labels=labels))
    garbage_t, garbage_s = t.copy(), s.copy()
    pad = labels == -100
    garbage_t[pad] = np.nan
    garbage_s[pad] = 1e30
    dirty = np.asarray(loss.compute(garbage_t, garbage_s, labels=labels))
    np.testing.assert_array_equal(clean, dirty)
    assert (dirty[pad] == 0).all()
    real = ~pad
    expected_mean = np_soft_kl(t[real], s[real], 2.0).mean()
    np.testing.assert_allclose(dirty.sum() / real.sum(), expected_mean, rtol=1e-5)


def test_token_kl_gradients_are_finite_with_garbage_padding():
    t = np.random.default_rng(0).normal(size=(1, 3, 4)).astype("float32")
    t[0, 2] = np.nan
    s = tf.Variable(np.zeros((1, 3, 4), "float32"))
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(kd_losses.token_kl_divergence(t, s, 1.0, mask=np.array([[1, 1, 0]])))
    gradient = tape.gradient(value, s).numpy()
    assert np.isfinite(gradient).all() and (gradient[0, 2] == 0).all()


def test_padding_mask():
    from keras_kd.losses._sequence import padding_mask

    np.testing.assert_array_equal(padding_mask(np.array([[4, -100], [-1, 0]]), -1), [[1, 1], [0, 1]])


# ----------------------------------------------------------------- serialization

# Registered name -> an instance with non-default arguments. Every registered loss needs one
# (test_config_round_trip fails otherwise).
ROUND_TRIP = {
    "soft_target_kl": kd_losses.SoftTargetKLDivergence(temperature=4.0, from_probabilities=True),
    "reverse_kl": kd_losses.ReverseKLDivergence(temperature=2.0, from_probabilities=True, name="rkl"),
    "logit_mse": kd_losses.LogitMSE(teacher_layer_name="a", student_layer_name="b"),
    "dkd": kd_losses.DecoupledKD(temperature=4.0, alpha=0.5, beta=4.0),
    "regression_mse": kd_losses.RegressionDistillation(),
    "token_kl": kd_losses.TokenKLDivergence(temperature=1.5, ignore_index=0),
    "fitnets": kd_losses.FitNetsHint("t", "s", use_adapter=False),
    "attention_transfer": kd_losses.AttentionTransfer("t", "s", p=1.0),
    "cosine_alignment": kd_losses.CosineAlignment("t", "s"),
    "rkd_distance": kd_losses.RKDDistance("t", "s"),
    "rkd_angle": kd_losses.RKDAngle("t", "s"),
    "pkt": kd_losses.PKT("t", "s"),
    "similarity_preserving": kd_losses.SimilarityPreserving("t", "s"),
    "crd": kd_losses.CRD("t", "s", embedding_dim=16, bank_size=32, tau=0.1),
    "vid": kd_losses.VID("t", "s", initial_variance=3.0),
    "multi_teacher_kl": kd_losses.MultiTeacherKLDivergence([2.0, 1.0], temperature=5.0),
    "input_gradient": kd_losses.InputGradientMatching(),
}


@pytest.mark.parametrize("name", REGISTERED)
def test_config_round_trip(name):
    if name not in ROUND_TRIP:
        pytest.fail(f"The registered loss {name!r} has no config round-trip: add an instance with non-default "
                    "arguments to ROUND_TRIP in tests/test_losses.py.")
    loss = ROUND_TRIP[name]
    assert loss.registered_name == name
    config = kd_losses.serialize(loss)
    restored = kd_losses.get(config)
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()
    by_name = kd_losses.get(loss.registered_name)
    assert type(by_name) is type(loss)


def test_round_trip_rows_are_registered_losses():
    assert sorted(ROUND_TRIP) == REGISTERED


def test_configs_saved_before_the_family_modules_became_private_still_load():
    # Configs (and .keras archives) record the module the class lived in; the registered name is what resolves it.
    config = kd_losses.serialize(kd_losses.SoftTargetKLDivergence(temperature=2.0))
    assert config["registered_name"] == "keras_kd>SoftTargetKLDivergence"
    old = dict(config, module="keras_kd.losses.response")
    restored = kd_losses.get(old)
    assert type(restored) is kd_losses.SoftTargetKLDivergence and restored.temperature == 2.0


def test_every_registered_loss_is_public_and_documented():
    import importlib
    import pkgutil

    # A family module that keras_kd.losses forgets to import would register nothing: import them all first.
    for module in pkgutil.iter_modules(kd_losses.__path__):
        importlib.import_module(f"keras_kd.losses.{module.name}")
        assert module.name.startswith("_"), f"keras_kd.losses.{module.name} should be private (_{module.name})"
    assert sorted(kd_losses.registered_names()) == sorted(REGISTERED)
    for name in REGISTERED:
        cls = type(kd_losses.get(name))
        assert cls.__name__ in kd_losses.__all__ and cls.function.__name__ in kd_losses.__all__
        assert f"| `{name}` | `{cls.__name__}` | `{cls.function.__name__}` |" in kd_losses.__doc__
        doc = cls.__doc__ or ""
        assert "Example" in doc, cls


# The public names that are not a registered loss's class or function: the registry's API and helpers.
NOT_LOSSES = [
    "DistillationLoss", "get", "register_loss", "registered_names", "serialize",
    "ProjectionAdapter", "attention_map", "cross_entropy_input_gradient", "regression_kd_objective",
]
# Internals: importable from their family module, out of __all__ (`stack_teachers` also from keras_kd.losses,
# where the multi-teacher loss's errors point).
INTERNALS = {"_information": ["CRDState", "VIDState"], "_sequence": ["padding_mask"],
             "_multi_teacher": ["stack_teachers"]}


def test_public_surface_is_pinned():
    losses = [n for name in REGISTERED for n in (type(kd_losses.get(name)).__name__,
                                                 type(kd_losses.get(name)).function.__name__)]
    assert sorted(kd_losses.__all__) == sorted(losses + NOT_LOSSES)
    for name in kd_losses.__all__:
        assert hasattr(kd_losses, name)


@pytest.mark.parametrize("module, names", sorted(INTERNALS.items()))
def test_internals_stay_importable_out_of_all(module, names):
    import importlib

    family = importlib.import_module(f"keras_kd.losses.{module}")
    for name in names:
        assert hasattr(family, name) and name not in family.__all__ and name not in kd_losses.__all__
    assert kd_losses.stack_teachers is importlib.import_module("keras_kd.losses._multi_teacher").stack_teachers


# ----------------------------------------------------------------- validation

def test_invalid_arguments_say_what_was_passed():
    with pytest.raises(ValueError, match="temperature must be"):
        kd_losses.ReverseKLDivergence(temperature=0.0)
    with pytest.raises(ValueError, match="beta must be a number >= 0, got -1"):
        kd_losses.DecoupledKD(beta=-1)
    with pytest.raises(ValueError, match="p must be a number > 0"):
        kd_losses.AttentionTransfer("a", "b", p=0)
    with pytest.raises(ValueError, match="teacher_weights must be non-negative"):
        kd_losses.MultiTeacherKLDivergence([-1.0, 1.0])
    with pytest.raises(ValueError, match="needs the ground-truth labels"):
        kd_losses.DecoupledKD().compute(T3, S3)
    with pytest.raises(ValueError, match="class ids of shape"):
        kd_losses.decoupled_kd(T3, S3, np.zeros((4, 2, 2)))


def test_shape_validation_messages():
    with pytest.raises(ValueError, match="spatial"):
        kd_losses.FitNetsHint("t", "s").validate_shapes((None, 8, 8, 4), (None, 4, 4, 4))
    with pytest.raises(ValueError, match="use_adapter=True"):
        kd_losses.FitNetsHint("t", "s", use_adapter=False).validate_shapes((None, 8), (None, 4))
    with pytest.raises(ValueError, match="same rank"):
        kd_losses.CosineAlignment("t", "s").validate_shapes((None, 8), (None, 2, 4))
    with pytest.raises(ValueError, match=r"\(batch, H, W, C\)"):
        kd_losses.AttentionTransfer("t", "s").validate_shapes((None, 8), (None, 8))
    with pytest.raises(ValueError, match="stack_teachers"):
        kd_losses.MultiTeacherKLDivergence().validate_shapes((None, 3), (None, 3))
    with pytest.raises(ValueError, match="one weight per teacher"):
        kd_losses.MultiTeacherKLDivergence([1.0, 1.0, 1.0]).validate_shapes((None, 2, 3), (None, 3))
    kd_losses.RKDAngle().validate_shapes((None, 8), (None, 3, 3, 2))  # relations: any widths


def test_adapter_and_states_are_built_at_creation():
    adapter = kd_losses.FitNetsHint("t", "s").create_state((None, 4, 4, 8), (None, 4, 4, 3))
    assert isinstance(adapter.projection, keras.layers.Conv2D) and len(adapter.trainable_weights) == 2
    assert kd_losses.FitNetsHint("t", "s").create_state((None, 8), (None, 8)) is None
    dense = kd_losses.CosineAlignment("t", "s").create_state((None, 5, 8), (None, 5, 3))
    assert isinstance(dense.projection, keras.layers.Dense)
    vid = kd_losses.VID("t", "s").create_state((None, 4, 4, 8), (None, 4, 4, 3))
    np.testing.assert_allclose(vid.variance().numpy(), np.full(8, 5.0), rtol=1e-5)
    crd = kd_losses.CRD("t", "s", embedding_dim=4, bank_size=6).create_state((None, 5), (None, 3))
    assert len(crd.trainable_weights) == 4 and len(crd.non_trainable_weights) == 3


def test_crd_queue_is_written_after_the_loss():
    loss = kd_losses.CRD(embedding_dim=4, bank_size=6, tau=0.5)
    state = loss.create_state((None, 6), (None, 3))
    teacher_bank, student_bank = state.teacher_bank.numpy().copy(), state.student_bank.numpy().copy()
    values = loss.compute(ET.astype("float32"), ES.astype("float32"), state=state)
    t = tf.math.l2_normalize(state.teacher_head(ET.astype("float32")), -1).numpy()
    s = tf.math.l2_normalize(state.student_head(ES.astype("float32")), -1).numpy()
    # The loss used the bank as it was before this batch, then wrote the batch into it.
    np.testing.assert_allclose(values, np_info_nce(s, t, teacher_bank, student_bank, 0.5), rtol=1e-4)
    np.testing.assert_allclose(state.teacher_bank.numpy()[:5], t, rtol=1e-5)
    np.testing.assert_allclose(state.student_bank.numpy()[:5], s, rtol=1e-5)
    np.testing.assert_array_equal(state.teacher_bank.numpy()[5], teacher_bank[5])
    assert int(state.bank_pointer.numpy()) == 5
    loss.compute(ET.astype("float32"), ES.astype("float32"), state=state)
    assert int(state.bank_pointer.numpy()) == 4  # wrapped around: (5 + 5) mod 6


def test_losses_compute_in_float32_from_float16_inputs():
    values = kd_losses.reverse_kl_divergence(T3.astype("float16"), S3.astype("float16"), 2.0)
    assert values.dtype == tf.float32


# ------------------------------------------------------------------ inside a Distiller

import keras_kd  # noqa: E402
from keras_kd.distiller import Distiller  # noqa: E402


def _dense_model(inputs, outputs, hidden=None, name=None, seed=0):
    layers = [keras.Input((inputs,))]
    if hidden:
        layers.append(keras.layers.Dense(hidden, activation="tanh", kernel_initializer=keras.initializers.GlorotUniform(seed)))
    layers.append(keras.layers.Dense(outputs, kernel_initializer=keras.initializers.GlorotUniform(seed + 1)))
    return keras.Sequential(layers, name=name)


def test_token_distillation_in_distiller_averages_over_real_tokens_only():
    rng = np.random.default_rng(1)
    vocab, seq = 5, 4
    inputs = keras.Input((seq, 3))
    student = keras.Model(inputs, keras.layers.Dense(vocab)(inputs))
    teacher = keras.Model(inputs, keras.layers.Dense(vocab)(inputs))
    distiller = Distiller(teacher, student, distillation_losses=kd_losses.TokenKLDivergence(2.0), alpha=0.5)
    distiller.compile(optimizer="sgd")
    x = rng.normal(size=(2, seq, 3)).astype("float32")
    y = np.array([[1, 4, -100, -100], [0, 2, 3, -100]])
    t = rng.normal(size=(2, seq, vocab)).astype("float32")
    t_garbage = t.copy()
    t_garbage[y == -100] = np.nan
    s = student(x).numpy()
    terms = distiller.compute_distillation_losses(tf.constant(x), tf.constant(y), {"final_output": tf.constant(s)},
                                                  {"final_output": tf.constant(t_garbage)})
    real = y != -100
    np.testing.assert_allclose(terms["token_kl"], np_soft_kl(t[real], s[real], 2.0).mean(), rtol=1e-5)
    ce = -_log_softmax(s[real])[np.arange(real.sum()), y[real]]
    np.testing.assert_allclose(terms["student_loss"], ce.mean(), rtol=1e-5)
    np.testing.assert_allclose(terms["loss"], 0.5 * ce.mean() + 0.5 * np_soft_kl(t[real], s[real], 2.0).mean(),
                               rtol=1e-5)
    # An explicit (batch, seq) sample_weight mask excludes positions the same way.
    y_full = np.where(real, y, 0)
    masked = distiller.compute_distillation_losses(tf.constant(x), tf.constant(y_full),
                                                   {"final_output": tf.constant(s)}, {"final_output": tf.constant(t)},
                                                   sample_weight=tf.constant(real.astype("float32")))
    np.testing.assert_allclose(masked["token_kl"], terms["token_kl"], rtol=1e-5)
    # And a fit step with padded labels stays finite.
    history = distiller.fit(x, y, epochs=1, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_regression_distiller_with_mse_student_loss_trains_end_to_end():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5], [0.0]]) + 0.1).astype("float32")
    teacher = _dense_model(4, 1, hidden=16, name="reg_teacher")
    teacher.compile("adam", "mse")
    teacher.fit(x, y, epochs=30, verbose=0)
    student = _dense_model(4, 1, name="reg_student", seed=5)
    distiller = Distiller(teacher, student, distillation_losses="regression_mse", alpha=0.5)
    distiller.compile(optimizer=keras.optimizers.Adam(0.05), student_loss="mse")
    before = float(np.mean((student.predict(x, verbose=0) - y) ** 2))
    distiller.fit(x, y, epochs=20, batch_size=16, verbose=0)
    after = float(np.mean((student.predict(x, verbose=0) - y) ** 2))
    assert after < 0.5 * before
    # The terms are the two MSEs weighted as documented: alpha * MSE(y_t, y_s) + (1 - alpha) * MSE(y, y_s).
    s, t = student(x).numpy(), teacher(x).numpy()
    terms = distiller.compute_distillation_losses(x, tf.constant(y), {"final_output": tf.constant(s)},
                                                  {"final_output": tf.constant(t)})
    np.testing.assert_allclose(terms["loss"], np.mean(kd_losses.regression_kd_objective(y, t, s, 0.5, 0.5)),
                               rtol=1e-5)


def test_multi_teacher_distiller_matches_numpy():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(6, 4)).astype("float32")
    teacher_a = _dense_model(4, 3, hidden=8, name="ta")
    teacher_b = _dense_model(4, 3, name="tb", seed=9)  # a different architecture
    ensemble = kd_losses.stack_teachers([teacher_a, teacher_b])
    assert not ensemble.trainable and tuple(ensemble.output.shape) == (None, 2, 3)
    student = _dense_model(4, 3, name="st", seed=3)
    distiller = Distiller(ensemble, student, distillation_losses=kd_losses.MultiTeacherKLDivergence([3.0, 1.0]),
                          temperature=2.5, alpha=1.0)
    distiller.compile(optimizer="sgd")
    t = ensemble(x).numpy()
    np.testing.assert_allclose(t[:, 0], teacher_a(x).numpy(), rtol=1e-6)
    s = student(x).numpy()
    terms = distiller.compute_distillation_losses(tf.constant(x), None, {"final_output": tf.constant(s)},
                                                  distiller.teacher_runner(tf.constant(x)))
    expected = np_multi_teacher(np.stack([teacher_a(x).numpy(), teacher_b(x).numpy()], 1), s, 2.5, [3, 1]).mean()
    np.testing.assert_allclose(terms["multi_teacher_kl"], expected, rtol=1e-5)
    with pytest.raises(ValueError, match="one weight per teacher"):
        Distiller(ensemble, _dense_model(4, 3), distillation_losses=kd_losses.MultiTeacherKLDivergence([1.0] * 3))


def test_input_gradient_matching_value_and_double_backprop():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(8, 4)).astype("float32")
    teacher = _dense_model(4, 3, name="lin_t", seed=11)
    student = _dense_model(4, 3, name="lin_s", seed=21)
    distiller = Distiller(teacher, student, distillation_losses=kd_losses.InputGradientMatching(), alpha=1.0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))

    def np_grad(model):
        w, b = [v.numpy() for v in model.weights]
        z = x @ w + b
        target = np.argmax(x @ teacher.weights[0].numpy() + teacher.weights[1].numpy(), axis=1)
        return (_softmax(z) - np.eye(3)[target]) @ w.T  # d CE / dx for a linear model

    expected = ((np_grad(teacher) - np_grad(student)) ** 2).sum(1).mean()
    xt = tf.constant(x)
    student_outputs = distiller._student_outputs(xt, training=False)
    terms = distiller.compute_distillation_losses(xt, None, student_outputs, distiller.teacher_runner(xt))
    np.testing.assert_allclose(terms["input_gradient"], expected, rtol=1e-4)
    history = distiller.fit(x, np.zeros(8, "int32"), epochs=3, batch_size=8, verbose=0)
    losses = history.history["distillation_loss"]
    assert losses[-1] < losses[0]  # the student's weights moved to match the input gradients
    with pytest.raises(ValueError, match="inside a keras_kd.Distiller"):
        kd_losses.InputGradientMatching().compute(x, x)


def test_dkd_warmup_through_the_loss_weight_variable():
    from keras_kd.callbacks import LossWeightScheduler
    from keras_kd.schedules import Constant, Warmup

    rng = np.random.default_rng(6)
    x = rng.normal(size=(16, 4)).astype("float32"); y = rng.integers(0, 3, 16)
    teacher = _dense_model(4, 3, hidden=8, name="dkd_t")
    student = _dense_model(4, 3, name="dkd_s", seed=4)
    distiller = Distiller(teacher, student, distillation_losses=kd_losses.DecoupledKD(), alpha=0.5)
    distiller.compile(optimizer="sgd")
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: seen.append(distiller.distillation_loss_weights[0]))
    history = distiller.fit(x, y, epochs=4, verbose=0, callbacks=[
        LossWeightScheduler("dkd", Warmup(Constant(1.0), warmup_steps=2)), record])
    assert seen == [0.0, 0.5, 1.0, 1.0]  # min(epoch / warmup, 1)
    assert history.history["distillation_loss"][0] == 0.0 and history.history["distillation_loss"][-1] > 0
    assert distiller.temperature.numpy() == 4.0  # DKD's own default temperature
