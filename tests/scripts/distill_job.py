"""A small, deterministic distillation job run in subprocesses by the tests.

Modes:
  single       train on one device, write the student's weights to OUT
               (teacher_dtype=bfloat16 runs the teacher in bfloat16, in single and multiworker)
  multiworker  one worker of MultiWorkerMirroredStrategy (TF_CONFIG set by the test)
  full         train EPOCHS epochs with a temperature schedule, no interruption
  interrupted  same, with BackupAndRestore in BACKUP; the process kills itself after KILL_AFTER epochs
  resume       same as interrupted but without the kill: resumes from BACKUP
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from keras_kd import schedules  # noqa: E402
from keras_kd.backend import keras, tf  # noqa: E402
from keras_kd.callbacks import TemperatureScheduler  # noqa: E402
from keras_kd.distiller import Distiller  # noqa: E402


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 8)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(8, 3)), axis=1).astype("int32")
    return x, y


def models():
    keras.utils.set_random_seed(1)
    teacher = keras.Sequential([keras.Input((8,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(3)])
    student = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    return teacher, student


def build(teacher_dtype=None):
    teacher, student = models()
    distiller = Distiller(teacher=teacher, student=student, alpha=0.6, teacher_dtype=teacher_dtype)
    return distiller.compile(optimizer=keras.optimizers.SGD(0.05))


def main(mode, out, backup=None, epochs=4, kill_after=2, teacher_dtype=None):
    keras.config.disable_traceback_filtering() if hasattr(keras, "config") else None
    x, y = data()
    if mode == "multiworker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        with strategy.scope():
            distiller = build(teacher_dtype)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32).with_options(options)
        history = distiller.fit(dataset, epochs=2, verbose=0)
        task = json.loads(os.environ["TF_CONFIG"])["task"]
        if task["index"] != 0:
            return
    elif mode == "single":
        distiller = build(teacher_dtype)
        history = distiller.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    else:
        distiller = build()
        callbacks = [TemperatureScheduler(schedules.Linear(6.0, 2.0, steps=epochs - 1))]
        if mode in ("interrupted", "resume"):
            callbacks.insert(0, keras.callbacks.BackupAndRestore(backup_dir=backup))
        if mode == "interrupted":

            class Kill(keras.callbacks.Callback):
                def on_epoch_end(self, epoch, logs=None):
                    if epoch + 1 == kill_after:
                        os._exit(3)  # a crash: no cleanup, no further epochs

            callbacks.append(Kill())
        history = distiller.fit(x, y, batch_size=32, epochs=epochs, shuffle=False, verbose=0, callbacks=callbacks)
    weights = {f"w{i}": w for i, w in enumerate(distiller.student.get_weights())}
    weights["temperature"] = np.array(float(distiller.temperature.numpy()))
    weights["loss"] = np.array(history.history["loss"])
    weights["temperatures"] = np.array(history.history["temperature"])
    np.savez(out, **weights)


if __name__ == "__main__":
    arguments = dict(arg.split("=", 1) for arg in sys.argv[2:])
    main(sys.argv[1], arguments["out"], arguments.get("backup"), teacher_dtype=arguments.get("teacher_dtype"))
