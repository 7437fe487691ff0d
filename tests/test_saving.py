"""keras_kd.load_model: saved keras_kd objects load in a fresh process after a bare `import keras_kd`.

The loads run in a child process: in this one, the test run has already imported
every module that registers a class, so an in-process load would pass either way.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import keras_kd
from keras_kd.backend import keras
from keras_kd.saving import SERIALIZABLE_MODULES
from tests.helpers import mlp, toy_data

PACKAGE_DIR = os.path.dirname(os.path.abspath(keras_kd.__file__))


def _fresh_python(code, *args):
    """Runs `code` in a new interpreter (Keras 3, no GPU); returns the CompletedProcess."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_USE_LEGACY_KERAS", None)
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=600)


def test_every_module_that_registers_a_class_is_imported_before_loading():
    registering = set()
    for folder, _, files in os.walk(PACKAGE_DIR):
        for name in files:
            if not name.endswith(".py"):
                continue
            with open(os.path.join(folder, name), encoding="utf-8") as handle:
                if not re.search(r"^\s*(@|return )keras\.saving\.register_keras_serializable", handle.read(), re.M):
                    continue
            module = os.path.relpath(os.path.join(folder, name), os.path.dirname(PACKAGE_DIR))[:-3].replace(os.sep, ".")
            # a private module is imported by its package (keras_kd.losses._feature by keras_kd.losses)
            parts = module.split(".")
            registering.add(".".join(parts[:-1]) if parts[-1].startswith("_") else module)
    assert registering == set(SERIALIZABLE_MODULES)


def test_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="No saved model at .*nothing.keras"):
        keras_kd.load_model(str(tmp_path / "nothing.keras"))


@pytest.mark.slow
def test_a_saved_qat_student_and_distiller_load_after_a_bare_import(tmp_path):
    from keras_kd.quantization import quantize_model

    x, y = toy_data(32, features=8, classes=3)
    qat = quantize_model(mlp(8, 3, hidden=16, name="student"))
    qat(x, training=True)  # sets the activation ranges
    qat_path = str(tmp_path / "qat.keras")
    qat.save(qat_path)
    distiller = keras_kd.Distiller(teacher=mlp(8, 3, hidden=32, seed=7), student=mlp(8, 3, hidden=16))
    distiller.compile(optimizer="adam")
    distiller.fit(x, y, epochs=1, batch_size=16, verbose=0)
    distiller_path = str(tmp_path / "distiller.keras")
    distiller.save(distiller_path)
    np.save(tmp_path / "x.npy", x)

    code = (
        "import json, sys, numpy as np, keras_kd\n"
        "qat = keras_kd.load_model(sys.argv[1])\n"
        "distiller = keras_kd.load_model(sys.argv[2])\n"
        "print(json.dumps({'qat': qat(np.load(sys.argv[3])).numpy().tolist(),"
        " 'distiller': type(distiller).__name__}))\n"
    )
    completed = _fresh_python(code, qat_path, distiller_path, str(tmp_path / "x.npy"))
    assert completed.returncode == 0, completed.stderr[-3000:]
    loaded = json.loads(completed.stdout.strip().splitlines()[-1])
    assert loaded["distiller"] == "Distiller"
    np.testing.assert_allclose(np.array(loaded["qat"]), qat(x).numpy(), rtol=0, atol=1e-6)

    # `keras-kd export` of that QAT file: the command loads it in its own process
    out = str(tmp_path / "student_int8.tflite")
    completed = _fresh_python(
        "import sys; from keras_kd.cli import main; sys.exit(main(sys.argv[1:]))",
        "export", qat_path, "--quantization", "int8", "--output", out, "--json",
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]
    assert os.path.getsize(out) > 0

