"""Tiny models and data shared by the tests (seeded, a few dozen samples)."""

import numpy as np

from keras_kd.backend import keras


def toy_data(n=64, features=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    w = rng.normal(size=(features, classes))
    y = np.argmax(x @ w, axis=1).astype("int32")
    return x, y


def mlp(features=8, classes=3, hidden=16, name=None, seed=0, hidden_name=None):
    init = keras.initializers.GlorotUniform(seed=seed)
    layers = [keras.Input((features,))]
    if hidden:
        layers.append(keras.layers.Dense(hidden, activation="relu", kernel_initializer=init, name=hidden_name))
    layers.append(keras.layers.Dense(classes, kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1)))
    return keras.Sequential(layers, name=name)


def trained_teacher(x, y, classes=3, epochs=3):
    teacher = mlp(x.shape[1], classes, hidden=32, name="teacher", seed=7)
    teacher.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(x, y, epochs=epochs, batch_size=16, verbose=0)
    return teacher


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def numpy_kd(teacher_logits, student_logits, temperature):
    """Hand-computed T^2 * KL(softmax(t/T) || softmax(s/T)), per example, in float64."""
    t = log_softmax(np.asarray(teacher_logits, np.float64) / temperature)
    s = log_softmax(np.asarray(student_logits, np.float64) / temperature)
    return (np.exp(t) * (t - s)).sum(-1) * temperature**2


def run_example(script, args, cwd, timeout):
    """Runs an examples/ script on Keras 3 in a subprocess; returns the CompletedProcess."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
    env.pop("TF_USE_LEGACY_KERAS", None)
    return subprocess.run(
        [sys.executable, os.path.join(root, "examples", script), *args],
        cwd=str(cwd), env=env, capture_output=True, text=True, timeout=timeout,
    )


def calibrated_int8_file(model, data, path, passes=3):
    """`quantize_model(model)` with its ranges set by `passes` training-mode passes over `data`, written to
    an INT8 file at `path` (checked by `to_tflite`); returns the QAT model."""
    from keras_kd.export import to_tflite
    from keras_kd.quantization import quantize_model

    qat = quantize_model(model)
    for _ in range(passes):
        qat(data, training=True)
    to_tflite(qat, path)
    return qat
