"""tf.distribute: the same training on one device, two mirrored devices and two worker processes."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from keras_kd.backend import keras, tf
from keras_kd.distiller import Distiller
from tests.helpers import mlp, toy_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOB = os.path.join(ROOT, "tests", "scripts", "distill_job.py")


def _run_distiller(strategy, x, y, teacher_weights, student_weights, **kwargs):
    with strategy.scope():
        teacher = mlp(hidden=32, seed=7)
        teacher.set_weights(teacher_weights)
        student = mlp(seed=3)
        student.set_weights(student_weights)
        distiller = Distiller(teacher=teacher, student=student, alpha=0.6, temperature=2.0, **kwargs)
        distiller.compile(optimizer=keras.optimizers.SGD(0.1), metrics=["accuracy"])
    history = distiller.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    return distiller.student.get_weights(), history.history, distiller


def _two_devices():
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        pytest.skip("two logical CPU devices were not configured (TensorFlow initialised early)")
    # ReductionToOneDevice: collective all-reduce keys clash between strategies built in one test process.
    return tf.distribute.MirroredStrategy([d.name for d in devices[:2]],
                                          cross_device_ops=tf.distribute.ReductionToOneDevice())


@pytest.mark.legacy_keras
def test_mirrored_two_devices_equals_one_device():
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        pytest.skip("two logical CPU devices were not configured (TensorFlow initialised early)")
    x, y = toy_data(n=64)
    teacher, student = mlp(hidden=32, seed=7), mlp(seed=3)
    single_w, single_h, _ = _run_distiller(tf.distribute.OneDeviceStrategy("/cpu:0"), x, y,
                                           teacher.get_weights(), student.get_weights())
    mirrored = _two_devices()
    assert mirrored.num_replicas_in_sync == 2
    mirror_w, mirror_h, _ = _run_distiller(mirrored, x, y, teacher.get_weights(), student.get_weights())
    for a, b in zip(single_w, mirror_w):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(single_h["loss"], mirror_h["loss"], rtol=1e-4)
    np.testing.assert_allclose(single_h["distillation_loss"], mirror_h["distillation_loss"], rtol=1e-4)


def test_bfloat16_teacher_is_the_trained_teacher_on_every_replica():
    """The reduced-precision copy is made before fit traces the step, so each replica reads the trained weights."""
    x, y = toy_data(n=64)
    teacher, student = mlp(hidden=32, seed=7), mlp(seed=3)
    single_w, single_h, _ = _run_distiller(tf.distribute.OneDeviceStrategy("/cpu:0"), x, y, teacher.get_weights(),
                                           student.get_weights(), teacher_dtype="bfloat16")
    mirror_w, mirror_h, distiller = _run_distiller(_two_devices(), x, y, teacher.get_weights(),
                                                   student.get_weights(), teacher_dtype="bfloat16")
    for variable, expected in zip(distiller.teacher_runner.reduced_precision_model().weights, teacher.get_weights()):
        variable = getattr(variable, "value", variable)  # the tf.Variable (mirrored) inside a Keras Variable
        for replica_value in distiller.distribute_strategy.experimental_local_results(variable):
            np.testing.assert_array_equal(replica_value.numpy().astype("float32"),
                                          expected.astype("bfloat16").astype("float32"))
    for a, b in zip(single_w, mirror_w):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(single_h["distillation_loss"], mirror_h["distillation_loss"], rtol=1e-4)


def test_skipped_non_finite_step_under_mirrored_equals_one_device():
    x, y = toy_data(n=64)
    x[20, 0] = np.nan  # second batch of 16: on replica 1 only, after the split into two halves of 8
    teacher, student = mlp(hidden=32, seed=7), mlp(seed=3)
    runs = [_run_distiller(strategy, x, y, teacher.get_weights(), student.get_weights(), check_finite="skip")
            for strategy in (tf.distribute.OneDeviceStrategy("/cpu:0"), _two_devices())]
    (single_w, single_h, _), (mirror_w, mirror_h, _) = runs
    assert single_h["non_finite_steps"] == mirror_h["non_finite_steps"] == [1.0, 1.0]
    for a, b in zip(single_w, mirror_w):
        assert np.all(np.isfinite(b))
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(single_h["loss"], mirror_h["loss"], rtol=1e-4)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


@pytest.mark.slow
@pytest.mark.parametrize("teacher_dtype", [None, "bfloat16"])
def test_multiworker_two_processes_equals_one_device(tmp_path, teacher_dtype):
    extra = [f"teacher_dtype={teacher_dtype}"] if teacher_dtype else []
    single = tmp_path / "single.npz"
    subprocess.run([sys.executable, JOB, "single", f"out={single}"] + extra, check=True, env=_env(), timeout=300)
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    out = tmp_path / "multi.npz"
    workers = [
        subprocess.Popen(
            [sys.executable, JOB, "multiworker", f"out={out}"] + extra,
            env=_env(TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    try:
        outputs = [w.communicate(timeout=300)[0].decode(errors="replace") for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    assert all(w.returncode == 0 for w in workers), "\n".join(o[-3000:] for o in outputs)
    a, b = np.load(single), np.load(out)
    for key in a.files:
        if key.startswith("w"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-4)


@pytest.mark.slow
def test_backup_and_restore_resumes_a_killed_run(tmp_path):
    full = tmp_path / "full.npz"
    subprocess.run([sys.executable, JOB, "full", f"out={full}"], check=True, env=_env(), timeout=300)
    backup = tmp_path / "backup"
    resumed = tmp_path / "resumed.npz"
    killed = subprocess.run([sys.executable, JOB, "interrupted", f"out={resumed}", f"backup={backup}"],
                            env=_env(), timeout=300)
    assert killed.returncode == 3 and not resumed.exists()
    subprocess.run([sys.executable, JOB, "resume", f"out={resumed}", f"backup={backup}"], check=True, env=_env(),
                   timeout=300)
    a, b = np.load(full), np.load(resumed)
    for key in a.files:
        if key.startswith("w"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert float(b["temperature"]) == float(a["temperature"]) == 2.0
    # the resumed process ran epochs 2 and 3 only, continuing the temperature schedule
    np.testing.assert_allclose(b["temperatures"], a["temperatures"][2:])
