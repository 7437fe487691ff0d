#!/usr/bin/env python
"""Distil a CNN teacher into a small student, then into a verified INT8 `.tflite` file.

The whole keras_kd workflow on the offline MNIST digits (`load_dataset("mnist5k")`,
4,000 train / 1,000 test):

1. train a float CNN teacher on the labels;
2. distil a smaller float CNN student with `keras_kd.Distiller`, the temperature
   falling from soft to sharp targets and alpha moving weight from the teacher to
   the labels (`TemperatureScheduler` / `AlphaScheduler`);
3. `keras_kd.quantization.quantize_model(student)`: the same student with
   BatchNormalization folded and int8 fake quantization where TFLite quantizes;
4. quantization-aware distillation of that copy from the same float teacher, for
   a few epochs at a lower learning rate;
5. `keras_kd.export.to_tflite(..., quantization="int8", validation_data=...)`: a
   full-integer file checked against the QAT model before it is written;
6. `evaluate_tflite` / `validate` and a small table.

Run from the repository root:

    python examples/qat_distill_to_tflite.py                       # ~2-3 min on 2 cores
    python examples/qat_distill_to_tflite.py --limit 600 --epochs 2 --teacher-epochs 2 --qat-epochs 1

`benchmarks/int8_export.py` imports the model builders and training steps through
this script (they live in `keras_kd.quickstart`) (`build_teacher`, `build_student`, `train_teacher`, `curriculum_distill`, `qat_distill`).
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# Run the checkout this script sits in, installed or not.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras_kd  # noqa: E402
from keras_kd.backend import keras  # noqa: E402
from keras_kd.export import evaluate_tflite, to_tflite, validate  # noqa: E402
from keras_kd.quantization import quantize_model  # noqa: E402

# The models and training steps are the quickstart's (`keras-kd quickstart` runs the same workflow).
from keras_kd.quickstart import (  # noqa: E402
    build_student,
    build_teacher,
    curriculum_distill,
    keras_accuracy,
    qat_distill,
)
from keras_kd.quickstart import train_supervised as train_teacher  # noqa: E402

__all__ = [
    "build_teacher",
    "build_student",
    "train_teacher",
    "curriculum_distill",
    "qat_distill",
    "keras_accuracy",
    "main",
]


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher-epochs", type=int, default=6, help="teacher training epochs (default 6)")
    parser.add_argument("--epochs", type=int, default=8, help="float distillation epochs (default 8)")
    parser.add_argument("--qat-epochs", type=int, default=3, help="quantization-aware distillation epochs (default 3)")
    parser.add_argument("--limit", type=int, default=None,
                        help="use at most this many samples of each split (default: all 4,000/1,000)")
    parser.add_argument("--out", default="qat_distill_out", help="folder for the .tflite file (created)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("teacher_epochs", "epochs", "qat_epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.limit is not None and args.limit < 20:
        parser.error(f"--limit must be >= 20 (a few samples of each of the 10 classes), got {args.limit}")
    return args


def main(argv=None):
    args = _parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    data = keras_kd.load_dataset("mnist5k", limit=args.limit, seed=args.seed)
    x_train, y_train, x_test, y_test = data.x_train, data.y_train, data.x_test, data.y_test
    print(f"data: {data.num_train} train / {data.num_test} test, input {data.input_shape}")

    teacher = build_teacher(data.input_shape, data.num_classes)
    train_teacher(teacher, x_train, y_train, args.teacher_epochs)
    student = build_student(data.input_shape, data.num_classes)
    curriculum_distill(teacher, student, x_train, y_train, args.epochs)

    qat_student = quantize_model(student)
    qat_distill(teacher, qat_student, x_train, y_train, args.qat_epochs)

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "student_qat_int8.tflite")
    # Refuses to write the file if it disagrees with the QAT model on more than 10% of the test set.
    report = to_tflite(qat_student, path, quantization="int8", validation_data=(x_test, y_test), min_agreement=0.9)
    evaluation = evaluate_tflite(report.path, x_test, y_test)
    check = validate(qat_student, report.path, x_test, y_test)

    rows = [
        ("teacher (Keras float32)", keras_accuracy(teacher, x_test, y_test)),
        ("student (Keras float32, distilled)", keras_accuracy(student, x_test, y_test)),
        ("student QAT (Keras, fake-quant)", check.keras_accuracy),
        ("student INT8 .tflite", evaluation.accuracy),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"\n{'model'.ljust(width)}  test accuracy")
    for name, accuracy in rows:
        print(f"{name.ljust(width)}  {accuracy:.4f}")
    print(f"\nfile: {report.path}")
    print(f"size_bytes: {report.size_bytes}")
    print(f"io_dtype: {report.input_dtype} -> {report.output_dtype}")
    print(f"float_ops: {report.float_ops or 'none'}")
    print(f"agreement: {check.agreement:.4f} (top-1, .tflite vs QAT Keras model, {check.num_samples} samples)")
    return report, check


if __name__ == "__main__":
    main()
