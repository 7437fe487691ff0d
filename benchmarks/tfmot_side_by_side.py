#!/usr/bin/env python
"""keras_kd QAT (Keras 3) beside tensorflow-model-optimization QAT (tf_keras), where tfmot runs.

For MobileNetV2 (alpha 0.35) and MobileNetV3Small (minimalistic, no preprocessing: tfmot
refuses hard-swish and Rescaling), both on 32x32 RGB offline digits with the same
schedule (float training, then QAT fine-tuning on the labels):

- the tfmot side runs in a child process with `TF_USE_LEGACY_KERAS=1`
  (`keras_kd.quantization.quantize_model` delegates to tfmot there);
- the keras_kd side runs here, on Keras 3;
- both files are converted to full int8 by `to_tflite`, checked against their own Keras
  model (top-1 agreement on the test split), and timed with ai-edge-litert on 1 thread,
  the two files interleaved over `--rounds` rounds (median of per-round p50s).

Targets (issue 9): keras_kd's file no slower (latency ratio keras_kd/tfmot <= 1.0, within
the run-to-run noise), and agreement at least as high as tfmot's.

Run from the repository root:

    python benchmarks/tfmot_side_by_side.py                 # ~15 min on 2 cores
    python benchmarks/tfmot_side_by_side.py --quick
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)
sys.path.insert(0, os.path.join(_ROOT, "examples"))

NETWORKS = ("MobileNetV2", "MobileNetV3Small-minimalistic")
BATCH_SIZE = 64


def _build(name, keras):
    applications = keras.applications
    if name == "MobileNetV2":
        backbone = applications.MobileNetV2(
            input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10, classifier_activation=None
        )
    else:
        backbone = applications.MobileNetV3Small(
            input_shape=(32, 32, 3), minimalistic=True, include_preprocessing=False, weights=None, classes=10,
            classifier_activation=None,
        )
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9  # short schedule: see examples/mobilenet_qat.py
    return backbone


def train_and_export(name, args, folder):
    """Float training, QAT fine-tuning, int8 export: on whichever Keras this process runs."""
    import mobilenet_qat as example
    import numpy as np

    from keras_kd.backend import keras
    from keras_kd.export import to_tflite
    from keras_kd.quantization import quantize_model

    keras.utils.set_random_seed(args.seed)
    x_train, y_train, x_test, y_test = example.load_rgb_digits(32, args.limit)
    x_train, x_test = x_train / 127.5 - 1.0, x_test / 127.5 - 1.0
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = _build(name, keras)
    model.compile(keras.optimizers.Adam(2e-3), loss)
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=BATCH_SIZE, verbose=0)
    qat = quantize_model(model)
    qat.compile(keras.optimizers.Adam(1e-4), loss)
    qat.fit(x_train, y_train, epochs=args.qat_epochs, batch_size=BATCH_SIZE, verbose=0)
    path = os.path.join(folder, f"{name}.tflite")
    report = to_tflite(qat, path, validation_data=(x_test, y_test), min_agreement=0.0, allow_float_fallback=True)
    keras_accuracy = float(np.mean(np.argmax(qat.predict(x_test, verbose=0), -1) == y_test))
    return {
        "path": path,
        "agreement": report.validation.agreement,
        "keras_accuracy": keras_accuracy,
        "int8_accuracy": report.validation.tflite_accuracy,
        "float_ops": report.float_ops,
        "size_kb": report.size_bytes / 1024,
    }


def _child(args):
    result = train_and_export(args.child, args, args.folder)
    print("RESULT " + json.dumps(result), flush=True)


def _run_tfmot(name, args, folder):
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    command = [
        sys.executable, os.path.abspath(__file__), "--child", name, "--folder", folder,
        "--epochs", str(args.epochs), "--qat-epochs", str(args.qat_epochs), "--seed", str(args.seed),
    ] + (["--limit", str(args.limit)] if args.limit else [])
    completed = subprocess.run(command, env=env, capture_output=True, text=True)
    for line in completed.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return {"error": (completed.stderr or completed.stdout).strip().splitlines()[-1:]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.qat_epochs, args.limit, args.rounds, args.runs = 1, 1, 300, 1, 10
    if args.child:
        return _child(args)
    from keras_kd.benchmark import benchmark_tflite, host_description

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in NETWORKS:
            os.makedirs(os.path.join(folder, "tfmot"), exist_ok=True)
            tfmot = _run_tfmot(name, args, os.path.join(folder, "tfmot"))
            ours = train_and_export(name, args, folder)
            row = {"network": name, "tfmot": tfmot, "keras_kd": ours}
            if "error" not in tfmot:
                p50 = {"tfmot": [], "keras_kd": []}
                for _ in range(args.rounds):
                    for side, result in (("tfmot", tfmot), ("keras_kd", ours)):
                        p50[side].append(benchmark_tflite(result["path"], num_threads=1, num_runs=args.runs).p50_ms)
                ratios = [k / t for k, t in zip(p50["keras_kd"], p50["tfmot"])]
                row["latency_ratio"] = statistics.median(ratios)
                row["p50_ms"] = {side: statistics.median(values) for side, values in p50.items()}
            rows.append(row)
            print(json.dumps(row, default=str), flush=True)
    print(f"{datetime.date.today().isoformat()}, {host_description()}; epochs {args.epochs} + QAT {args.qat_epochs}")
    print("| network | agreement tfmot | agreement keras_kd | INT8 acc tfmot | INT8 acc keras_kd | latency keras_kd/tfmot |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        t, k = row["tfmot"], row["keras_kd"]
        if "error" in t:
            print(f"| {row['network']} | tfmot failed: {t['error']} | {k['agreement']:.2%} | | {k['int8_accuracy']:.2%} | |")
            continue
        print(
            f"| {row['network']} | {t['agreement']:.2%} | {k['agreement']:.2%} | {t['int8_accuracy']:.2%} "
            f"| {k['int8_accuracy']:.2%} | {row['latency_ratio']:.2f}x ({row['p50_ms']['keras_kd']:.3f} / "
            f"{row['p50_ms']['tfmot']:.3f} ms) |"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
