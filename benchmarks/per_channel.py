#!/usr/bin/env python
"""What per-channel kernel scales buy and cost: `quantize_model(..., per_channel=True / "depthwise" / False)` side by side.

For each seed and network, one float student is distilled from a float teacher (as in
`qat_networks.py`, the same data, schedule and learning rates); from that same student, one
QAT copy per `per_channel` mode is distilled for the same epochs with the same seed (same
batches, same augmentation: none), written with `to_tflite` and measured:

- QAT INT8 accuracy of the file on the test split, and its agreement with its Keras model;
- the INT8 file's size over the float32 file's (as `to_tflite` writes it, and with
  `strip_names=True`).

The modes differ only in how convolution kernels are scaled, so the accuracy column is
the price of the smaller file. Mean and spread over the seeds are printed per mode.

`--latency` trains nothing: each network gets trained-like weights and ranges set on 256
inputs (as `qat_networks.py --sizes`), its INT8 file is written in each mode, and the
three files are timed in interleaved rounds (ai-edge-litert, 1 thread, median of the
per-round p50s), as ratios over the per-channel file.

Run from the repository root:

    python benchmarks/per_channel.py --networks MobileNetV2-0.35 --seeds 0,1,2
    python benchmarks/per_channel.py --quick          # smoke run: a small net, tiny data
    python benchmarks/per_channel.py --latency --networks MobileNetV2-0.35   # host latency per mode
"""

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import qat_networks as shared  # noqa: E402

from keras_kd.backend import keras  # noqa: E402
from keras_kd.benchmark import benchmark_tflite, host_description  # noqa: E402
from keras_kd.export import to_tflite  # noqa: E402
from keras_kd.quantization import quantize_model  # noqa: E402

MODES = (True, "depthwise", False)


def measure(name, data, teacher, args, seed, folder):
    kind, build = shared.NETWORKS[name]
    x_train, y_train, x_test, y_test = data
    keras.utils.set_random_seed(seed)
    student = shared.example.shorten_batch_norm_memory(build(x_train.shape[1:]))
    shared._distill(teacher, student, x_train, y_train, args.epochs, 2e-3)
    float_path = os.path.join(folder, "float32.tflite")
    float_size = to_tflite(student, float_path, quantization=None).size_bytes
    row = {"network": name, "seed": seed, "float_accuracy": shared._accuracy(student, x_test, y_test)}
    for mode in MODES:
        keras.utils.set_random_seed(seed)
        qat = quantize_model(student, per_channel=mode)
        shared._distill(teacher, qat, x_train, y_train, args.qat_epochs, 1e-4)
        path = os.path.join(folder, f"int8_{mode}.tflite")
        report = to_tflite(qat, path, validation_data=(x_test, y_test), min_agreement=0.0)
        row[str(mode)] = {
            "int8_accuracy": report.validation.tflite_accuracy,
            "agreement": report.validation.agreement,
            "size_ratio": report.size_bytes / float_size,
            "stripped_size_ratio": shared._stripped_size(path) / float_size,
        }
    return row


def measure_latency(name, data, args, folder):
    """Host latency of the INT8 file in each mode (same weights and ranges), over the per-channel file's."""
    student, qat, _ = shared._calibrated(name, data)
    paths = {}
    for mode in MODES:
        copy = shared.requantized(student, qat, per_channel=mode)
        paths[str(mode)] = to_tflite(copy, os.path.join(folder, f"int8_{mode}.tflite")).path
    p50s = {key: [] for key in paths}
    for _ in range(args.rounds):
        for key, path in paths.items():
            p50s[key].append(benchmark_tflite(path, num_threads=1, num_runs=args.runs, warmup_runs=5).p50_ms)
    medians = {key: statistics.median(values) for key, values in p50s.items()}
    return {"network": name, "p50_ms": medians,
            "ratio": {key: medians[key] / medians["True"] for key in medians}}


def _spread(values):
    return f"{statistics.mean(values):.2%} +- {statistics.pstdev(values):.2%}" if values else "n/a"


def _print(rows, header):
    print(header)
    print("| network | seed | float | " + " | ".join(f"per_channel={m!s}: INT8 / agreement / size (stripped)"
                                                      for m in MODES) + " |")
    print("|---|---:|---:|" + "---:|" * len(MODES))
    for row in rows:
        cells = [
            f"{row[str(m)]['int8_accuracy']:.2%} / {row[str(m)]['agreement']:.1%} / "
            f"{row[str(m)]['size_ratio']:.3f}x ({row[str(m)]['stripped_size_ratio']:.3f}x)"
            for m in MODES
        ]
        print(f"| {row['network']} | {row['seed']} | {row['float_accuracy']:.2%} | " + " | ".join(cells) + " |")
    for name in dict.fromkeys(row["network"] for row in rows):
        mine = [row for row in rows if row["network"] == name]
        means = ", ".join(f"{m!s}: {_spread([r[str(m)]['int8_accuracy'] for r in mine])}" for m in MODES)
        print(f"{name}, QAT INT8 over {len(mine)} seed(s): {means}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default="MobileNetV2-0.35", help=f"comma-separated: {', '.join(shared.NETWORKS)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--limit", type=int, default=None, help="samples per split (default: all)")
    parser.add_argument("--teacher-epochs", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=20, help="float distillation epochs")
    parser.add_argument("--qat-epochs", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="one small net, tiny data and schedule")
    parser.add_argument("--latency", action="store_true", help="host latency of each mode's file; no training")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved latency rounds")
    parser.add_argument("--runs", type=int, default=100, help="interpreter runs per latency round")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.networks, args.seeds, args.limit = "Conv1D keyword spotting", "0", 300
        args.teacher_epochs, args.epochs, args.qat_epochs = 1, 1, 1
    names = [n.strip() for n in args.networks.split(",")]
    unknown = [n for n in names if n not in shared.NETWORKS]
    if unknown:
        parser.error(f"unknown network(s) {unknown}; choose from {list(shared.NETWORKS)}")
    if args.latency:
        return main_latency(names, args)
    rows, datasets = [], {}
    for seed in (int(s) for s in args.seeds.split(",")):
        teachers = {}
        for name in names:
            kind = shared.NETWORKS[name][0]
            if kind not in datasets:
                datasets[kind] = shared._DATA[kind](args.limit)
            if kind not in teachers:
                keras.utils.set_random_seed(seed)
                teachers[kind] = shared._fit_teacher(kind, datasets[kind][0], datasets[kind][1], args.teacher_epochs)
            with tempfile.TemporaryDirectory() as folder:
                row = measure(name, datasets[kind], teachers[kind], args, seed, folder)
            rows.append(row)
            print(json.dumps(row), flush=True)
    header = (
        f"{datetime.date.today().isoformat()}, {host_description()}; epochs {args.epochs} float + "
        f"{args.qat_epochs} QAT per mode, teacher {args.teacher_epochs}, limit {args.limit}"
    )
    _print(rows, header)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"header": header, "rows": rows}, handle, indent=2)
    return 0


def main_latency(names, args):
    rows, datasets = [], {}
    for name in names:
        kind = shared.NETWORKS[name][0]
        if kind not in datasets:
            datasets[kind] = shared._DATA[kind](args.limit)
        keras.utils.set_random_seed(0)
        with tempfile.TemporaryDirectory() as folder:
            rows.append(measure_latency(name, datasets[kind], args, folder))
        print(json.dumps(rows[-1]), flush=True)
    print(f"{datetime.date.today().isoformat()}, {host_description()}; INT8 host latency, 1 thread, "
          f"{args.rounds} interleaved rounds of {args.runs} runs")
    print("| network | " + " | ".join(f"per_channel={m!s}: p50 ms (over per channel)" for m in MODES) + " |")
    print("|---|" + "---:|" * len(MODES))
    for row in rows:
        cells = [f"{row['p50_ms'][str(m)]:.3f} ({row['ratio'][str(m)]:.2f}x)" for m in MODES]
        print(f"| {row['network']} | " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"rows": rows}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
