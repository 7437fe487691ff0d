#!/usr/bin/env python
"""INT8 export: file size, accuracy, agreement and host latency of a distilled student, float32 vs INT8.

On the offline MNIST digits (`keras_kd.data.load_dataset("mnist5k")`, 4,000 train /
1,000 test) with the models and training steps of `examples/qat_distill_to_tflite.py`
(imported from there, not copied), one run measures side by side:

- float32 `.tflite` size, INT8 (QAT) `.tflite` size and their ratio (target <= 0.27x);
- accuracy of the float distilled student (Keras), of the same student quantized after
  training (PTQ INT8, calibrated on 200 training samples) and of the QAT-distilled INT8
  file (targets: within 0.5 points of the float student, and not below PTQ INT8);
- top-1 agreement of the INT8 file with the QAT Keras model (target >= 99%);
- host latency of the INT8 file vs the float32 file, ai-edge-litert with 1 thread
  (`keras_kd.benchmark.benchmark_tflite`, the two files interleaved over `--rounds`
  rounds, median of the per-round p50s; target <= 0.3x).

Each figure is printed with its target and PASS/MISS; the INT8 file's op counts and
any op that still computes in float are printed too, to explain a miss.

The student (0.22M parameters, most of them in its Dense head) is sized so that
weights dominate the file: for a model of a few thousand parameters the flatbuffer's
fixed overhead (op/tensor tables, quantization parameters, names) would dominate
both files and hide the 4x weight saving.

Run from the repository root:

    python benchmarks/int8_export.py                   # ~4-6 min on 2 cores
    python benchmarks/int8_export.py --quick           # smoke run, < 1 min
    python benchmarks/int8_export.py --json out.json   # also write the figures
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Measure the checkout this script sits in, installed or not, with the example's models.
sys.path.insert(0, _ROOT)
sys.path.insert(0, os.path.join(_ROOT, "examples"))

import qat_distill_to_tflite as example  # noqa: E402

from keras_kd.backend import keras  # noqa: E402
from keras_kd.benchmark import benchmark_tflite, host_description  # noqa: E402
from keras_kd.data import load_dataset  # noqa: E402
from keras_kd.export import evaluate_tflite, inspect_tflite, to_tflite, validate  # noqa: E402
from keras_kd.quantization import quantize_model  # noqa: E402

TARGETS = {
    "size_ratio": 0.27,
    "accuracy_drop_points": 0.5,
    "agreement": 0.99,
    "latency_ratio": 0.3,
}
CALIBRATION_SAMPLES = 200


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 400 samples, 3/3/1 epochs, 3 rounds of 30 runs (figures not meaningful)")
    parser.add_argument("--teacher-epochs", type=int, default=None, help="default 6 (quick: 3)")
    parser.add_argument("--epochs", type=int, default=None, help="float distillation epochs, default 8 (quick: 3)")
    parser.add_argument("--qat-epochs", type=int, default=None, help="QAT distillation epochs, default 3 (quick: 1)")
    parser.add_argument("--limit", type=int, default=None, help="samples per split (default all; quick: 400)")
    parser.add_argument("--rounds", type=int, default=None, help="latency rounds, default 7 (quick: 3)")
    parser.add_argument("--runs", type=int, default=None, help="timed invokes per round and file, default 500")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="keep the .tflite files in this folder (default: a temp dir)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "teacher_epochs": 3 if quick else 6,
        "epochs": 3 if quick else 8,
        "qat_epochs": 1 if quick else 3,
        "limit": 400 if quick else None,
        "rounds": 3 if quick else 7,
        "runs": 30 if quick else 500,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def _verdict(passed):
    return "PASS" if passed else "MISS"


def _latency(float_path, int8_path, rounds, runs):
    """Median over rounds of each file's p50, the two files alternating within every round."""
    p50 = {"float32": [], "int8": []}
    for round_index in range(rounds):
        order = [("float32", float_path), ("int8", int8_path)]
        if round_index % 2:  # alternate which file goes first, so neither always runs on a warmer cache
            order.reverse()
        for label, path in order:
            result = benchmark_tflite(path, num_threads=1, warmup_runs=20, num_runs=runs)
            p50[label].append(result.p50_ms)
    return {label: statistics.median(values) for label, values in p50.items()}, p50


def run(args):
    started = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    data = load_dataset("mnist5k", limit=args.limit, seed=args.seed)
    x_train, y_train, x_test, y_test = data.x_train, data.y_train, data.x_test, data.y_test
    print(f"data: mnist5k {data.num_train} train / {data.num_test} test; host: {host_description()}", flush=True)

    teacher = example.build_teacher(data.input_shape, data.num_classes)
    example.train_teacher(teacher, x_train, y_train, args.teacher_epochs)
    student = example.build_student(data.input_shape, data.num_classes)
    example.curriculum_distill(teacher, student, x_train, y_train, args.epochs)
    timings = {"train_float_s": time.perf_counter() - started}
    print(f"teacher + float distillation: {timings['train_float_s']:.0f} s", flush=True)

    out_dir = args.out or tempfile.mkdtemp(prefix="int8_export_")
    os.makedirs(out_dir, exist_ok=True)
    float_report = to_tflite(student, os.path.join(out_dir, "student_float32.tflite"), quantization=None,
                             validation_data=(x_test, y_test))
    # PTQ of the same float student: the converter calibrates activation ranges on 200 training inputs.
    calibration = x_train[:: max(1, len(x_train) // CALIBRATION_SAMPLES)][:CALIBRATION_SAMPLES]
    ptq_report = to_tflite(student, os.path.join(out_dir, "student_ptq_int8.tflite"), quantization="int8",
                           representative_data=calibration, num_calibration_samples=CALIBRATION_SAMPLES,
                           validation_data=(x_test, y_test), min_agreement=0.0)

    qat_started = time.perf_counter()
    qat_student = quantize_model(student)
    example.qat_distill(teacher, qat_student, x_train, y_train, args.qat_epochs)
    timings["train_qat_s"] = time.perf_counter() - qat_started
    # min_agreement=0: the benchmark reports a low agreement as a MISS instead of refusing the file.
    qat_report = to_tflite(qat_student, os.path.join(out_dir, "student_qat_int8.tflite"), quantization="int8",
                           validation_data=(x_test, y_test), min_agreement=0.0)

    float_accuracy = example.keras_accuracy(student, x_test, y_test)
    float_file_accuracy = evaluate_tflite(float_report.path, x_test, y_test).accuracy
    ptq_accuracy = evaluate_tflite(ptq_report.path, x_test, y_test).accuracy
    check = validate(qat_student, qat_report.path, x_test, y_test)
    qat_accuracy = check.tflite_accuracy

    latency_started = time.perf_counter()
    latency, per_round = _latency(float_report.path, qat_report.path, args.rounds, args.runs)
    timings["latency_s"] = time.perf_counter() - latency_started
    timings["total_s"] = time.perf_counter() - started

    size_ratio = qat_report.size_bytes / float_report.size_bytes
    latency_ratio = latency["int8"] / latency["float32"]
    drop_points = 100.0 * (float_accuracy - qat_accuracy)
    summary = inspect_tflite(qat_report.path)
    figures = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "host": host_description(),
        "python": platform.python_version(),
        "keras": keras.__version__,
        "settings": {name: getattr(args, name) for name in
                     ("quick", "teacher_epochs", "epochs", "qat_epochs", "limit", "rounds", "runs", "seed")},
        "num_train": int(data.num_train),
        "num_test": int(data.num_test),
        "student_params": int(student.count_params()),
        "teacher_params": int(teacher.count_params()),
        "float32_size_bytes": int(float_report.size_bytes),
        "int8_size_bytes": int(qat_report.size_bytes),
        "ptq_int8_size_bytes": int(ptq_report.size_bytes),
        "size_ratio": size_ratio,
        "float_keras_accuracy": float_accuracy,
        "float32_file_accuracy": float_file_accuracy,
        "ptq_int8_accuracy": ptq_accuracy,
        "ptq_agreement_with_float": ptq_report.validation.agreement,
        "qat_keras_accuracy": check.keras_accuracy,
        "qat_int8_accuracy": qat_accuracy,
        "qat_drop_points": drop_points,
        "agreement": check.agreement,
        "qat_max_abs_diff": check.max_abs_diff,
        "float32_p50_ms": latency["float32"],
        "int8_p50_ms": latency["int8"],
        "latency_ratio": latency_ratio,
        "p50_per_round_ms": per_round,
        "int8_op_counts": summary.op_counts,
        "int8_float_ops": summary.float_ops,
        "timings": timings,
    }
    figures["checks"] = {
        "size_ratio": size_ratio <= TARGETS["size_ratio"],
        "qat_vs_float": drop_points <= TARGETS["accuracy_drop_points"],
        "qat_vs_ptq": qat_accuracy >= ptq_accuracy,
        "agreement": check.agreement >= TARGETS["agreement"],
        "latency_ratio": latency_ratio <= TARGETS["latency_ratio"],
    }
    return figures


def _print(figures):
    checks = figures["checks"]
    rows = [
        ("float32 .tflite size", f"{figures['float32_size_bytes'] / 1024:.1f} KiB", "", ""),
        ("INT8 (QAT) .tflite size", f"{figures['int8_size_bytes'] / 1024:.1f} KiB", "", ""),
        ("  size ratio INT8/float32", f"{figures['size_ratio']:.3f}x", f"<= {TARGETS['size_ratio']}x",
         _verdict(checks["size_ratio"])),
        ("float distilled student (Keras)", f"{100 * figures['float_keras_accuracy']:.2f} %", "", ""),
        ("PTQ INT8 (200 calib. samples)", f"{100 * figures['ptq_int8_accuracy']:.2f} %", "", ""),
        ("QAT-distilled INT8 .tflite", f"{100 * figures['qat_int8_accuracy']:.2f} %", "", ""),
        ("  drop vs float student", f"{figures['qat_drop_points']:+.2f} pt",
         f"<= {TARGETS['accuracy_drop_points']} pt", _verdict(checks["qat_vs_float"])),
        ("  QAT INT8 - PTQ INT8", f"{100 * (figures['qat_int8_accuracy'] - figures['ptq_int8_accuracy']):+.2f} pt",
         ">= 0 pt", _verdict(checks["qat_vs_ptq"])),
        ("agreement file vs QAT Keras", f"{100 * figures['agreement']:.2f} %",
         f">= {100 * TARGETS['agreement']:.0f} %", _verdict(checks["agreement"])),
        ("float32 p50 (1 thread)", f"{figures['float32_p50_ms']:.4f} ms", "", ""),
        ("INT8 p50 (1 thread)", f"{figures['int8_p50_ms']:.4f} ms", "", ""),
        ("  latency ratio INT8/float32", f"{figures['latency_ratio']:.3f}x", f"<= {TARGETS['latency_ratio']}x",
         _verdict(checks["latency_ratio"])),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    print()
    print(f"student {figures['student_params']:,} params, teacher {figures['teacher_params']:,}; "
          f"{figures['num_train']} train / {figures['num_test']} test samples")
    header = ("figure", "value", "target", "")
    widths = [max(w, len(h)) for w, h in zip(widths, header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print(f"\nfloat32 .tflite accuracy {100 * figures['float32_file_accuracy']:.2f} %, "
          f"PTQ agreement with float {100 * figures['ptq_agreement_with_float']:.2f} %, "
          f"QAT Keras accuracy {100 * figures['qat_keras_accuracy']:.2f} %")
    print(f"INT8 ops: {figures['int8_op_counts']}; ops computing in float: {figures['int8_float_ops'] or 'none'}")
    print(f"p50 per round (ms): float32 {[round(v, 4) for v in figures['p50_per_round_ms']['float32']]}, "
          f"int8 {[round(v, 4) for v in figures['p50_per_round_ms']['int8']]}")
    timings = figures["timings"]
    print(f"time: float training {timings['train_float_s']:.0f} s, QAT {timings['train_qat_s']:.0f} s, "
          f"latency {timings['latency_s']:.0f} s, total {timings['total_s']:.0f} s")
    missed = [name for name, passed in checks.items() if not passed]
    verdict = f"{len(checks) - len(missed)}/{len(checks)} targets met"
    print(f"\n{verdict}; missed: {', '.join(missed)}" if missed else f"\n{verdict}")


def main(argv=None):
    args = _parse_args(argv)
    figures = run(args)
    _print(figures)
    if args.json:
        directory = os.path.dirname(os.path.abspath(args.json))
        handle, temp = tempfile.mkstemp(dir=directory, suffix=".json.tmp")
        with os.fdopen(handle, "w") as stream:
            json.dump(figures, stream, indent=2)
        os.replace(temp, args.json)
        print(f"figures written to {args.json}")
    return figures


if __name__ == "__main__":
    main()
