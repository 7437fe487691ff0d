"""The quickstart pipeline: teacher -> students -> INT8 file -> verification -> latency -> report.

`keras-kd quickstart` runs `run_quickstart()`. On the offline MNIST digits
(`load_dataset("mnist5k")`, 4,000 train / 1,000 test) it trains a CNN teacher,
a student from scratch and a distilled student with a temperature/alpha
curriculum, converts the distilled student to INT8 after training
(post-training quantization) and after quantization-aware distillation,
checks each INT8 file against its Keras model, measures host latency, and
writes a report (Markdown, JSON, PNG plots) to the run folder.

The model builders and training steps are public so examples and benchmarks
share them.
"""

import os
import time

import numpy as np

from keras_kd import schedules
from keras_kd.backend import keras
from keras_kd.callbacks import AlphaScheduler, TemperatureScheduler
from keras_kd.schemes import distill

__all__ = ["build_teacher", "build_student", "train_supervised", "curriculum_distill", "qat_distill", "keras_accuracy",
           "run_quickstart", "BATCH_SIZE"]

BATCH_SIZE = 64


def _conv_block(filters, name, strides=1):
    # No bias: BatchNormalization's beta plays that role, and quantize_model folds BN into the kernel.
    return [
        keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv"),
        keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn"),
        keras.layers.ReLU(name=f"{name}_relu"),
    ]


def build_teacher(input_shape=(28, 28, 1), num_classes=10):
    """A CNN teacher (four conv blocks, a 256-unit head, 0.87M parameters on 28x28x1) giving logits.

    Example:

    >>> build_teacher().count_params() > 800_000
    True
    """
    return keras.Sequential(
        [
            keras.Input(input_shape),
            *_conv_block(32, "t1"),
            *_conv_block(32, "t2"),
            keras.layers.MaxPooling2D(name="t_pool1"),
            *_conv_block(64, "t3"),
            *_conv_block(64, "t4"),
            keras.layers.MaxPooling2D(name="t_pool2"),
            keras.layers.Flatten(name="t_flatten"),
            keras.layers.Dropout(0.3, name="t_dropout"),
            keras.layers.Dense(256, activation="relu", name="t_fc"),
            keras.layers.Dense(num_classes, name="t_logits"),
        ],
        name="teacher",
    )


def build_student(input_shape=(28, 28, 1), num_classes=10, width=32, hidden=64, name="student"):
    """A small CNN student (two conv blocks and a small head) giving logits; every layer quantizes.

    With the defaults it has 0.22M parameters and a fifth of the teacher's multiply-adds.

    Example:

    >>> build_student().count_params() < 250_000
    True
    """
    return keras.Sequential(
        [
            keras.Input(input_shape),
            # A stride-2 stem, as mobile networks start: a full-resolution 3x3 conv on one input channel
            # is the slowest layer in INT8 (XNNPACK's int8 kernel for 9-tap dot products is slower than
            # its float one on x86), so the first conv computes at half resolution instead of pooling after.
            *_conv_block(width, "s1", strides=2),
            *_conv_block(2 * width, "s2"),
            keras.layers.MaxPooling2D(name="s_pool"),
            keras.layers.Flatten(name="s_flatten"),
            keras.layers.Dense(hidden, activation="relu", name="s_fc"),
            keras.layers.Dense(num_classes, name="s_logits"),
        ],
        name=name,
    )


def train_supervised(model, x, y, epochs, learning_rate=1e-3, verbose=0, validation_data=None):
    """Trains `model` on the labels alone (sparse cross-entropy from logits); returns the History."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model.fit(x, y, epochs=epochs, batch_size=BATCH_SIZE, shuffle=True, verbose=verbose,
                     validation_data=validation_data)


def curriculum_distill(teacher, student, x, y, epochs, learning_rate=1e-3, verbose=0, validation_data=None):
    """Distils `student` from `teacher` with a curriculum (`keras_kd.schemes.distill`); returns the History.

    The temperature falls linearly from 6 to 2 (soft targets first, sharper
    later) and alpha, the distillation weight, from 0.9 to 0.5.
    """
    steps = max(1, epochs - 1)
    return distill(
        teacher, student, (x, y), epochs=epochs, batch_size=BATCH_SIZE, optimizer=keras.optimizers.Adam(learning_rate),
        alpha=0.9, temperature=6.0, metrics=["accuracy"], verbose=verbose, validation_data=validation_data,
        callbacks=[
            TemperatureScheduler(schedules.Linear(6.0, 2.0, steps=steps)),
            AlphaScheduler(schedules.Linear(0.9, 0.5, steps=steps)),
        ],
    )


def qat_distill(teacher, qat_student, x, y, epochs, learning_rate=1e-4, verbose=0):
    """Fine-tunes a `quantize_model` copy from the float teacher (T=2, alpha=0.5); returns the History.

    A lower learning rate than float distillation: the weights only need to
    adapt to the int8 grid while the activation ranges settle.
    """
    from keras_kd.quantization import is_quantization_aware

    if not is_quantization_aware(qat_student):
        raise ValueError(
            f"qat_student {qat_student.name!r} has no fake quantization; pass quantize_model(student), not the "
            "float student."
        )
    return distill(teacher, qat_student, (x, y), epochs=epochs, batch_size=BATCH_SIZE,
                   optimizer=keras.optimizers.Adam(learning_rate), alpha=0.5, temperature=2.0, metrics=["accuracy"],
                   verbose=verbose)


def keras_accuracy(model, x, y, batch_size=256):
    """Top-1 accuracy of a Keras model that outputs logits or probabilities."""
    predictions = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(predictions, axis=-1) == np.asarray(y)))


def _say(quiet, message):
    if not quiet:
        print(message, flush=True)


def run_quickstart(out_dir="keras_kd_quickstart", dataset="mnist5k", teacher_epochs=6, epochs=8, qat_epochs=3,
                   limit=None, seed=0, benchmark_runs=200, quiet=False, verbose=0):
    """Runs the whole pipeline and writes the report; returns a dict with the rows and file paths.

    Args:
        out_dir: run folder (created); holds the `.keras` models, the
            `.tflite` files, `report.md`, `report.json` and the PNG plots.
        dataset: a `keras_kd.data.load_dataset` name or `.npz` path.
        teacher_epochs, epochs, qat_epochs: training lengths.
        limit: use at most this many samples of each split.
        seed: random seed.
        benchmark_runs: timed runs per host latency measurement.
        quiet: print nothing.
        verbose: Keras progress bars (0, 1 or 2).

    Example:

    ```python
    result = run_quickstart("run1", teacher_epochs=1, epochs=1, qat_epochs=1, limit=200)
    print(open(result["report_md"]).read())
    ```
    """
    from keras_kd.benchmark import benchmark_keras, benchmark_tflite
    from keras_kd.data import load_dataset
    from keras_kd.export import to_tflite
    from keras_kd.quantization import quantize_model
    from keras_kd.report import ReportRow, build_report

    for name, value in (("teacher_epochs", teacher_epochs), ("epochs", epochs), ("qat_epochs", qat_epochs)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    started = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    from keras_kd.files import check_writable_folder

    check_writable_folder(os.path.join(out_dir, "report.json"), "the run folder")  # before minutes of training
    keras.utils.set_random_seed(seed)
    data = load_dataset(dataset, limit=limit, seed=seed)
    x_train, y_train, x_test, y_test = data.x_train, data.y_train, data.x_test, data.y_test
    _say(quiet, f"[1/6] data: {data.name}, {data.num_train} train / {data.num_test} test, input {data.input_shape}")

    teacher = build_teacher(data.input_shape, data.num_classes)
    train_supervised(teacher, x_train, y_train, teacher_epochs, verbose=verbose)
    teacher_accuracy = keras_accuracy(teacher, x_test, y_test)
    _say(quiet, f"[2/6] teacher: {teacher.count_params():,} params, accuracy {teacher_accuracy:.2%}")

    keras.utils.set_random_seed(seed + 1)
    scratch = build_student(data.input_shape, data.num_classes, name="student_scratch")
    train_supervised(scratch, x_train, y_train, epochs, verbose=verbose)
    scratch_accuracy = keras_accuracy(scratch, x_test, y_test)
    keras.utils.set_random_seed(seed + 1)  # the same initial weights as the scratch student
    student = build_student(data.input_shape, data.num_classes)
    history = curriculum_distill(teacher, student, x_train, y_train, epochs, verbose=verbose)
    distilled_accuracy = keras_accuracy(student, x_test, y_test)
    _say(quiet, f"[3/6] students: scratch {scratch_accuracy:.2%}, distilled {distilled_accuracy:.2%} "
                f"({student.count_params():,} params)")

    paths = {name: os.path.join(out_dir, f"{name}.tflite")
             for name in ("student_float32", "student_int8_ptq", "student_int8_qat")}
    float_report = to_tflite(student, paths["student_float32"], quantization=None)
    ptq_report = to_tflite(student, paths["student_int8_ptq"], quantization="int8",
                           representative_data=x_train[:200], validation_data=(x_test, y_test), min_agreement=0.9)
    qat_student = quantize_model(student)
    qat_history = qat_distill(teacher, qat_student, x_train, y_train, qat_epochs, verbose=verbose)
    qat_keras_accuracy = keras_accuracy(qat_student, x_test, y_test)
    qat_report = to_tflite(qat_student, paths["student_int8_qat"], quantization="int8",
                           validation_data=(x_test, y_test), min_agreement=0.99)
    _say(quiet, f"[4/6] INT8 files: post-training {ptq_report.validation.tflite_accuracy:.2%} "
                f"(agreement {ptq_report.validation.agreement:.2%}), QAT-distilled "
                f"{qat_report.validation.tflite_accuracy:.2%} (agreement with its Keras model "
                f"{qat_report.validation.agreement:.2%})")

    keras_latency = benchmark_keras(teacher, num_runs=benchmark_runs, warmup_runs=10)
    latency = {name: benchmark_tflite(path, num_threads=1, num_runs=benchmark_runs, warmup_runs=10)
               for name, path in paths.items()}
    _say(quiet, f"[5/6] host latency, 1 thread: float32 {latency['student_float32'].p50_ms:.3f} ms, "
                f"INT8 {latency['student_int8_qat'].p50_ms:.3f} ms")

    from keras_kd.files import atomic_write

    for path, model in ((os.path.join(out_dir, "teacher.keras"), teacher),
                        (os.path.join(out_dir, "student_distilled.keras"), student)):
        atomic_write(path, model.save)
    rows = [
        ReportRow("teacher (Keras)", teacher.count_params(), None, teacher_accuracy, keras_latency.p50_ms),
        ReportRow("student from scratch (Keras)", scratch.count_params(), None, scratch_accuracy),
        ReportRow("distilled student (float32 .tflite)", student.count_params(), float_report.size_bytes,
                  distilled_accuracy, latency["student_float32"].p50_ms),
        ReportRow("distilled student (INT8 post-training)", student.count_params(), ptq_report.size_bytes,
                  ptq_report.validation.tflite_accuracy, latency["student_int8_ptq"].p50_ms),
        ReportRow("QAT-distilled student (INT8)", student.count_params(), qat_report.size_bytes,
                  qat_report.validation.tflite_accuracy, latency["student_int8_qat"].p50_ms),
    ]
    curriculum = {key: list(history.history[key]) for key in ("temperature", "alpha")}
    curriculum["accuracy"] = list(history.history["accuracy"])
    written = build_report(rows, out_dir, curriculum=curriculum, title="keras_kd quickstart")
    elapsed = time.perf_counter() - started
    _say(quiet, f"[6/6] report written to {out_dir} in {elapsed:.0f} s\n")
    from keras_kd.report import render_markdown

    _say(quiet, render_markdown(rows))
    return {
        "rows": [row.to_dict() for row in rows],
        "files": written,
        "report_md": os.path.join(out_dir, "report.md"),
        "elapsed_s": elapsed,
        "qat_keras_accuracy": qat_keras_accuracy,
        "qat_agreement": qat_report.validation.agreement,
        "history": {key: [float(v) for v in values] for key, values in history.history.items()},
        "qat_history": {key: [float(v) for v in values] for key, values in qat_history.history.items()},
    }
