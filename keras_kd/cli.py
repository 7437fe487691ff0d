"""The `keras-kd` command line: quickstart, distill, export, benchmark, report.

Exit codes scripts can trust: 0 success, 1 the work failed (a model did not
convert, an INT8 file disagreed with its model, a device run failed), 2 bad
input (arguments, config, files). Errors go to stderr as one line that says
what to fix; `--json` prints one JSON document on stdout.
"""

import argparse
import json
import os
import sys

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input from the user: exit code 2."""


def _print_json(document):
    print(json.dumps(document, indent=2, sort_keys=True, default=str))


def _load_config(path):
    if not os.path.isfile(path):
        raise UsageError(f"no config file at {path!r}")
    with open(path) as handle:
        text = handle.read()
    try:
        if path.endswith(".json"):
            config = json.loads(text)
        else:
            import yaml

            config = yaml.safe_load(text)
    except Exception as error:  # the parsers' own messages say where
        raise UsageError(f"cannot parse {path!r}: {error}") from None
    if not isinstance(config, dict):
        raise UsageError(f"{path!r} must hold a mapping of settings, got {type(config).__name__}")
    return config


def _load_model(spec, what):
    from keras_kd.backend import keras

    if isinstance(spec, str):
        if not os.path.isfile(spec):
            raise UsageError(f"{what}: no model file at {spec!r} (expected a .keras file)")
        return keras.models.load_model(spec, compile=False)
    if isinstance(spec, dict):
        try:
            return keras.saving.deserialize_keras_object(spec)
        except Exception as error:
            raise UsageError(f"{what}: cannot build the model from its Keras config: {error}") from None
    raise UsageError(f"{what} must be a .keras path or a Keras serialization dict, got {spec!r}")


def _strategy(name):
    import tensorflow as tf

    if name in ("auto", None):
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise UsageError("--strategy multiworker needs TF_CONFIG describing the cluster and this task")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise UsageError(f"unknown strategy {name!r}")


# ------------------------------------------------------------------ commands
def cmd_quickstart(args):
    from keras_kd.quickstart import run_quickstart

    result = run_quickstart(out_dir=args.out, dataset=args.dataset, teacher_epochs=args.teacher_epochs,
                            epochs=args.epochs, qat_epochs=args.qat_epochs, limit=args.limit, seed=args.seed,
                            quiet=args.json, verbose=1 if args.progress else 0)
    if args.json:
        _print_json({"rows": result["rows"], "files": result["files"], "elapsed_s": result["elapsed_s"]})
    return EXIT_OK


_DISTILL_KEYS = {"teacher", "student", "dataset", "epochs", "batch_size", "optimizer", "alpha", "temperature",
                 "distillation_losses", "distillation_loss_weights", "schedules", "qat", "output", "limit",
                 "teacher_dtype", "seed"}


def cmd_distill(args):
    config = _load_config(args.config)
    unknown = sorted(set(config) - _DISTILL_KEYS)
    if unknown:
        raise UsageError(f"unknown config keys {unknown}; known keys: {sorted(_DISTILL_KEYS)}")
    for key in ("teacher", "student"):
        if key not in config:
            raise UsageError(f"the config needs '{key}' (a .keras path or a Keras model config)")
    from keras_kd import schedules as kd_schedules
    from keras_kd.backend import keras
    from keras_kd.callbacks import AlphaScheduler, LossWeightScheduler, TemperatureScheduler
    from keras_kd.data import load_dataset
    from keras_kd.distiller import Distiller

    if args.mixed_precision:
        keras.mixed_precision.set_global_policy(args.mixed_precision)
    keras.utils.set_random_seed(int(config.get("seed", 0)))
    data = load_dataset(config.get("dataset", "mnist5k"), limit=config.get("limit"))
    strategy = _strategy(args.strategy)
    output = args.output or config.get("output", "keras_kd_run")
    os.makedirs(output, exist_ok=True)
    with strategy.scope():
        teacher = _load_model(config["teacher"], "teacher")
        student = _load_model(config["student"], "student")
        if config.get("qat"):
            from keras_kd.quantization import quantize_model

            student = quantize_model(student)
        losses = config.get("distillation_losses")
        distiller = Distiller(teacher=teacher, student=student, distillation_losses=losses,
                              distillation_loss_weights=config.get("distillation_loss_weights"),
                              teacher_dtype=config.get("teacher_dtype"))
        distiller.compile(optimizer=keras.optimizers.get(config.get("optimizer", "adam")), metrics=["accuracy"],
                          alpha=config.get("alpha"), temperature=config.get("temperature"))
    callbacks = []
    for name, spec in (config.get("schedules") or {}).items():
        if name == "temperature":
            callbacks.append(TemperatureScheduler(kd_schedules.get(spec)))
        elif name == "alpha":
            callbacks.append(AlphaScheduler(kd_schedules.get(spec)))
        else:
            callbacks.append(LossWeightScheduler(name, kd_schedules.get(spec)))
    history = distiller.fit(data.x_train, data.y_train, epochs=int(config.get("epochs", 5)),
                            batch_size=int(config.get("batch_size", 64)),
                            validation_data=(data.x_test, data.y_test),
                            verbose=0 if args.json else 2, callbacks=callbacks)
    from keras_kd.files import atomic_write

    student_path = os.path.join(output, "student.keras")
    atomic_write(student_path, distiller.student.save)
    summary = {"student": student_path, "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
               "strategy": type(strategy).__name__, "replicas": strategy.num_replicas_in_sync}

    def write_history(temporary):
        with open(temporary, "w") as handle:
            json.dump(summary["history"], handle)

    atomic_write(os.path.join(output, "history.json"), write_history)
    if args.json:
        _print_json(summary)
    else:
        print(f"student saved to {student_path}; final val_accuracy {summary['history'].get('val_accuracy', ['?'])[-1]}")
    return EXIT_OK


def _load_array(path, what):
    import numpy as np

    if not os.path.isfile(path):
        raise UsageError(f"{what}: no file at {path!r}")
    if path.endswith(".npy"):
        return np.load(path, allow_pickle=False), None
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as archive:
            for x_key, y_key in (("x", "y"), ("x_test", "y_test"), ("x_train", "y_train")):
                if x_key in archive:
                    return archive[x_key], (archive[y_key] if y_key in archive else None)
        raise UsageError(f"{what}: {path!r} has none of the arrays x, x_test, x_train")
    raise UsageError(f"{what}: expected a .npy or .npz file, got {path!r}")


def cmd_export(args):
    from keras_kd.export import ExportValidationError, to_tflite

    if not os.path.isfile(args.model):
        raise UsageError(f"no model file at {args.model!r}")
    calibration = _load_array(args.calibration, "--calibration")[0] if args.calibration else None
    validation = None
    if args.validation:
        x, y = _load_array(args.validation, "--validation")
        validation = (x, y) if y is not None else x
    output = args.output or os.path.splitext(args.model)[0] + (
        f"_{args.quantization}.tflite" if args.quantization != "none" else ".tflite")
    try:
        report = to_tflite(args.model, output, quantization=None if args.quantization == "none" else args.quantization,
                           representative_data=calibration, io_dtype=args.io_dtype, validation_data=validation,
                           min_agreement=args.min_agreement, allow_select_tf_ops=args.allow_select_tf_ops)
    except ExportValidationError as error:
        print(f"keras-kd export: {error}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        _print_json(report.to_dict())
    else:
        print(f"wrote {report.path} ({report.size_bytes:,} bytes, {report.quantization}); ops: "
              + ", ".join(f"{k} x{v}" for k, v in sorted(report.op_counts.items())))
        if report.validation is not None:
            print(f"agreement with the Keras model: {report.validation.agreement:.2%}")
    return EXIT_OK


def cmd_benchmark(args):
    from keras_kd import benchmark

    if not os.path.isfile(args.model):
        raise UsageError(f"no .tflite file at {args.model!r}")
    if args.android:
        if not args.benchmark_binary:
            raise UsageError("--android needs --benchmark-binary PATH (LiteRT's benchmark_model for the phone)")
        result = benchmark.benchmark_android(args.model, benchmark_binary=args.benchmark_binary, adb=args.adb,
                                             serial=args.serial, num_threads=args.threads, use_gpu=args.use_gpu,
                                             use_nnapi=args.use_nnapi, num_runs=args.runs, cpu_mask=args.cpu_mask)
    else:
        result = benchmark.benchmark_tflite(args.model, num_threads=args.threads, num_runs=args.runs,
                                            warmup_runs=args.warmup, use_xnnpack=not args.no_xnnpack)
    if args.json:
        _print_json(result.to_dict())
    else:
        for key, value in result.to_dict().items():
            if value is not None and not isinstance(value, dict):
                print(f"{key:>16}: {value}")
    return EXIT_OK


def cmd_report(args):
    from keras_kd.report import load_report, render_markdown

    if not os.path.isdir(args.run_dir):
        raise UsageError(f"no run folder at {args.run_dir!r}")
    report = load_report(args.run_dir)
    if args.json:
        _print_json(report)
    else:
        print(render_markdown(report["rows"], title=report.get("title")))
    return EXIT_OK


# -------------------------------------------------------------------- parser
def build_parser():
    """The argparse parser of `keras-kd` (every subcommand documented in its --help)."""
    parser = argparse.ArgumentParser(
        prog="keras-kd",
        description="Knowledge distillation for Keras, to a verified INT8 .tflite with measured latency.",
        epilog="Exit codes: 0 success, 1 the work failed, 2 bad input.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("quickstart", help="teacher -> students -> INT8 -> verification -> latency -> report",
                       description="Runs the whole pipeline on offline data and writes a report (about 3-6 minutes "
                                   "on 2 CPU cores with the defaults).")
    p.add_argument("--dataset", default="mnist5k",
                   help="mnist5k (offline, default), digits, fashion_mnist, keras:NAME (needs a network) or a .npz")
    p.add_argument("--out", default="keras_kd_quickstart", help="run folder (default: keras_kd_quickstart)")
    p.add_argument("--teacher-epochs", type=int, default=6)
    p.add_argument("--epochs", type=int, default=8, help="student training epochs (scratch and distilled)")
    p.add_argument("--qat-epochs", type=int, default=3, help="quantization-aware distillation epochs")
    p.add_argument("--limit", type=int, default=None, help="use at most this many samples of each split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action="store_true", help="show Keras progress bars")
    p.add_argument("--json", action="store_true", help="print the result as JSON only")
    p.set_defaults(func=cmd_quickstart)

    p = sub.add_parser("distill", help="distil a student from a teacher as a YAML/JSON config says",
                       description="Config keys: teacher, student (.keras paths or Keras configs), dataset, epochs, "
                                   "batch_size, optimizer, alpha, temperature, distillation_losses, "
                                   "distillation_loss_weights, schedules {temperature|alpha|LOSS: schedule config}, "
                                   "qat, teacher_dtype, limit, seed, output.")
    p.add_argument("config", help="a .yaml/.yml/.json file")
    p.add_argument("--strategy", default="auto", choices=["auto", "default", "mirrored", "multiworker", "tpu"],
                   help="tf.distribute strategy (auto: mirrored over several GPUs, else the default)")
    p.add_argument("--mixed-precision", nargs="?", const="mixed_bfloat16", default=None,
                   choices=["mixed_float16", "mixed_bfloat16"], help="Keras mixed-precision policy")
    p.add_argument("--output", default=None, help="run folder (overrides the config's output)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("export", help="convert a .keras model to .tflite (INT8 by default), verified")
    p.add_argument("model", help="a .keras file")
    p.add_argument("--quantization", default="int8", choices=["int8", "float16", "dynamic", "none"])
    p.add_argument("--calibration", help=".npy/.npz of representative inputs (needed for INT8 of a float model)")
    p.add_argument("--validation", help=".npz with x (and y) to check the file against the model")
    p.add_argument("--min-agreement", type=float, default=0.99)
    p.add_argument("--io-dtype", choices=["int8", "uint8", "float32"], default=None)
    p.add_argument("--allow-select-tf-ops", action="store_true", help="allow Flex ops (needs the Flex delegate)")
    p.add_argument("--output", help="output path (default: beside the model)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("benchmark", help="latency of a .tflite on this host or on an Android phone")
    p.add_argument("model", help="a .tflite file")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--no-xnnpack", action="store_true")
    p.add_argument("--android", action="store_true", help="run on a phone over adb")
    p.add_argument("--benchmark-binary", help="LiteRT benchmark_model built for the phone")
    p.add_argument("--adb", default="adb")
    p.add_argument("--serial", default=None)
    p.add_argument("--cpu-mask", default=None, help="taskset mask, e.g. f0 for the big cores")
    p.add_argument("--use-gpu", action="store_true")
    p.add_argument("--use-nnapi", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("report", help="print the report of a run folder")
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv=None):
    """Entry point of the `keras-kd` command; returns the exit code."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as error:
        print(f"keras-kd {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as error:
        print(f"keras-kd {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"keras-kd {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # the work itself failed: say so in one line, keep the exit code honest
        print(f"keras-kd {args.command}: failed: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
