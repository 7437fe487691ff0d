"""The `keras-kd` command line: quickstart, distill, export, benchmark, report.

Exit codes scripts can trust: 0 success, 1 the work failed (a model did not
convert, an INT8 file disagreed with its model, a device run failed), 2 bad
input (arguments, config, files). Errors go to stderr as one line that says
what to fix; `--json` prints one JSON document on stdout.
"""

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import tempfile

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: Default run folders (the repository's .gitignore lists them).
QUICKSTART_OUTPUT, DISTILL_OUTPUT = "keras_kd_quickstart", "keras_kd_run"


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
    from keras_kd.saving import load_model, register_serializables

    if isinstance(spec, str):
        if not os.path.isfile(spec):
            raise UsageError(f"{what}: no model file at {spec!r} (expected a .keras file)")
        return load_model(spec, compile=False)
    if isinstance(spec, dict):
        register_serializables()
        try:
            return keras.saving.deserialize_keras_object(spec)
        except Exception as error:
            hint = "" if "module" in spec else " (add module: keras, or module: keras.layers for a layer, as " \
                                                "keras.saving.serialize_keras_object writes it)"
            raise UsageError(f"{what}: cannot build the model from its Keras config{hint}: {error}") from None
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


EXAMPLE_CONFIGS = "examples/configs/"
_EXAMPLES_HINT = f"See the example configs in {EXAMPLE_CONFIGS} (distill_mnist5k.yaml, distill_qat.yaml)."


class _Bad(Exception):
    """A config value that is not what its key expects; the message says what was found."""


def _describe(value):
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, bool):
        return f"the boolean {value!r}"
    if isinstance(value, float):
        return f"the number {value!r}"
    if isinstance(value, (list, dict)):
        return f"a {type(value).__name__} {json.dumps(value, default=str)[:120]}"
    return repr(value)


def _whole(value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _Bad(f"got {_describe(value)}")
    if isinstance(value, str):
        hint = " (remove the quotes)" if value.strip().lstrip("-").isdigit() else ""
        raise _Bad(f"got {_describe(value)}{hint}")
    if isinstance(value, float):
        if value.is_integer():
            raise _Bad(f"got {value!r}; write it without the decimal point: {int(value)}")
        raise _Bad(f"got {value!r}, which has a fraction; it is not rounded for you")
    if value < minimum:
        raise _Bad(f"got {value!r}")
    return int(value)


def _positive_int(value):
    return _whole(value, 1)


def _non_negative_int(value):
    return _whole(value, 0)


def _number(value, low=None, high=None, low_open=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        hint = ""
        if isinstance(value, str):
            try:
                float(value)
                hint = " (remove the quotes)"
            except ValueError:
                pass
        raise _Bad(f"got {_describe(value)}{hint}")
    if (low is not None and (value < low or (low_open and value == low))) or (high is not None and value > high):
        raise _Bad(f"got {value!r}")
    return float(value)


def _model_spec(value):
    if isinstance(value, str):
        if not value.endswith((".keras", ".h5")):
            raise _Bad(f"got {value!r}, which is not a .keras file")
        if not os.path.isfile(value):
            raise _Bad(f"no model file at {value!r} (absolute: {os.path.abspath(value)!r})")
        return value
    if isinstance(value, dict) and "class_name" in value and isinstance(value.get("config"), dict):
        return value
    raise _Bad(f"got {_describe(value)}")


def _dataset(value):
    from keras_kd.data import check_dataset

    if not isinstance(value, str):
        raise _Bad(f"got {_describe(value)}")
    try:
        return check_dataset(value)
    except (ValueError, TypeError, FileNotFoundError) as error:
        raise _Bad(str(error)) from None


def _serialized_or_name(value):
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and "class_name" in value:
        return value
    raise _Bad(f"got {_describe(value)}")


def _augment_spec(value):
    items = value if isinstance(value, list) else [value]
    if not items:
        raise _Bad("got an empty list")
    for item in items:
        if not (isinstance(item, dict) and "class_name" in item):
            raise _Bad(f"got {_describe(item)}")
    return value


def _build_augment(spec):
    """The `augment` layer of a config: one layer, or a Sequential of the listed layers."""
    if spec is None:
        return None
    from keras_kd.backend import keras

    layers = []
    for item in spec if isinstance(spec, list) else [spec]:
        item = dict(item)
        item.setdefault("module", "keras.layers")
        try:
            layers.append(keras.saving.deserialize_keras_object(item))
        except Exception as error:
            raise UsageError(f"augment: cannot build the layer {item.get('class_name')!r} from its config: "
                             f"{error}") from None
    return layers[0] if len(layers) == 1 else keras.Sequential(layers, name="augment")


def _losses(value):
    items = value if isinstance(value, list) else [value]
    if not items:
        raise _Bad("got an empty list")
    for item in items:
        _serialized_or_name(item)
    return value


def _loss_weights(value):
    if isinstance(value, list):
        return [_number(item, low=0.0) for item in value]
    return _number(value, low=0.0)


# flat keys people write for each schedule, to suggest the {class_name, config} form
_SCHEDULE_GUESSES = (
    ({"start", "end", "steps"}, "Linear"),
    ({"boundaries", "values"}, "Step"),
    ({"initial", "rate"}, "Exponential"),
    ({"schedule", "warmup_steps"}, "Warmup"),
    ({"value"}, "Constant"),
)


def _schedule(value):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _number(value)
    if isinstance(value, dict) and "class_name" in value:
        if not isinstance(value.get("config", {}), dict):
            raise _Bad(f"its 'config' must be a mapping of the schedule's arguments, got {_describe(value['config'])}")
        return value
    if isinstance(value, dict):
        guess = next((name for keys, name in _SCHEDULE_GUESSES if keys <= set(value)), "Linear")
        written = json.dumps({"class_name": guess, "config": value}).replace('"', "")
        raise _Bad(f"got {_describe(value)} without a class_name; write it as {written}")
    raise _Bad(f"got {_describe(value)}")


def _schedules(value):
    if not isinstance(value, dict):
        raise _Bad(f"got {_describe(value)}")
    problems = []
    checked = {}
    for name, spec in value.items():
        try:
            checked[name] = _schedule(spec)
        except _Bad as error:
            problems.append(f"schedules.{name}: {error}")
    if problems:
        raise _Bad("; ".join(problems))
    return checked


def _boolean(value):
    if not isinstance(value, bool):
        raise _Bad(f"got {_describe(value)}")
    return value


def _per_channel(value):
    if value is True or value is False or value == "depthwise":
        return value
    raise _Bad(f"got {_describe(value)}")


def _choice(*choices):
    def check(value):
        if value not in choices:
            raise _Bad(f"got {_describe(value)}")
        return value

    return check


def _folder(value):
    if not isinstance(value, str) or not value.strip():
        raise _Bad(f"got {_describe(value)}")
    if os.path.exists(value) and not os.path.isdir(value):
        raise _Bad(f"{value!r} is a file")
    return value


@dataclasses.dataclass(frozen=True)
class ConfigKey:
    """One key of a `keras-kd distill` config: what it takes, its check, its default."""

    name: str
    expected: str
    check: object
    default: object = None
    required: bool = False


#: The keys of a `keras-kd distill` config. The --help text, the checks and their messages come from this table.
DISTILL_CONFIG = (
    ConfigKey("teacher", "a .keras file path, or a Keras model config {module, class_name, config}", _model_spec,
              required=True),
    ConfigKey("student", "a .keras file path, or a Keras model config {module, class_name, config}", _model_spec,
              required=True),
    ConfigKey("dataset", "a keras_kd.data.load_dataset name (mnist5k, digits, fashion_mnist, keras:NAME) or an "
              ".npz path", _dataset, "mnist5k"),
    ConfigKey("epochs", "a positive whole number, e.g. 5", _positive_int, 5),
    ConfigKey("batch_size", "a positive whole number, e.g. 64", _positive_int, 64),
    ConfigKey("optimizer", "a Keras optimizer name (adam) or config {class_name: Adam, config: {learning_rate: "
              "0.001}}", _serialized_or_name, "adam"),
    ConfigKey("alpha", "a number in [0, 1]: the weight of the distillation loss", lambda v: _number(v, 0.0, 1.0)),
    ConfigKey("temperature", "a number > 0, e.g. 4", lambda v: _number(v, 0.0, low_open=True)),
    ConfigKey("distillation_losses", "a keras_kd loss name (soft_target_kl), a loss config, or a list of them",
              _losses),
    ConfigKey("distillation_loss_weights", "a number >= 0 or a list of them, one per distillation loss",
              _loss_weights),
    ConfigKey("schedules", "a mapping {temperature|alpha|LOSS_NAME: a number, or {class_name: Linear, config: "
              "{start: 4, end: 2, steps: 3}}}", _schedules),
    ConfigKey("augment", "a Keras layer config or a list of them (e.g. [{class_name: RandomTranslation, config: "
              "{height_factor: 0.1, width_factor: 0.1}}]): one view of each batch for teacher and student",
              _augment_spec),
    ConfigKey("mixing", "null, mixup or cutmix: mix the inputs of each batch (function matching)",
              _choice(None, "mixup", "cutmix")),
    ConfigKey("qat", "true or false: distil into quantize_model(student)", _boolean, False),
    ConfigKey("per_channel", "true, depthwise or false: quantize_model's per_channel (with qat: true), which "
              "convolution kernels keep one scale per output channel", _per_channel, True),
    ConfigKey("teacher_dtype", "null, bfloat16 or float16", _choice(None, "bfloat16", "float16")),
    ConfigKey("limit", "a positive whole number of samples per split, or null for all", _positive_int),
    ConfigKey("seed", "a whole number >= 0", _non_negative_int, 0),
    ConfigKey("output", "a folder path (the run folder)", _folder, DISTILL_OUTPUT),
)
_DISTILL_KEYS = {key.name: key for key in DISTILL_CONFIG}


def validate_distill_config(config, source="the config"):
    """Checks every key of a `keras-kd distill` config without loading TensorFlow or any model.

    Returns:
        A dict with every key of `DISTILL_CONFIG`, defaults filled in and values checked.

    Raises:
        UsageError: naming each bad key, the value found and the form expected.

    Example:

    >>> validate_distill_config({"teacher": {"class_name": "Sequential", "config": {}},
    ...                          "student": {"class_name": "Sequential", "config": {}}, "epochs": 2})["epochs"]
    2
    """
    if not isinstance(config, dict):
        raise UsageError(f"{source} must hold a mapping of settings, got {type(config).__name__}. {_EXAMPLES_HINT}")
    problems = []
    unknown = sorted(set(config) - set(_DISTILL_KEYS), key=str)
    if unknown:
        problems.append(f"unknown config keys {unknown}; known keys: {sorted(_DISTILL_KEYS)}")
    checked = {}
    for key in DISTILL_CONFIG:
        if key.name not in config or (config[key.name] is None and not key.required):
            if key.required:
                problems.append(f"{key.name}: missing; expected {key.expected}")
            checked[key.name] = key.default
            continue
        try:
            checked[key.name] = key.check(config[key.name])
        except _Bad as error:
            detail = str(error)
            if detail.startswith("schedules."):
                problems.append(f"{detail}; expected {key.expected}")
            else:
                problems.append(f"{key.name}: {detail}; expected {key.expected}")
    if config.get("per_channel") is not None and "per_channel" in checked and not checked.get("qat"):
        # true too: whoever sets it without qat: true expects it to change something, and it would not
        problems.append(f"per_channel: got {_describe(config['per_channel'])} without qat: true; it only applies to "
                        "a quantization-aware student: set qat: true, or remove per_channel")
    if problems:
        listing = "\n  ".join(problems)
        raise UsageError(f"{source} has {len(problems)} problem{'s' * (len(problems) > 1)}:\n  {listing}\n"
                         f"{_EXAMPLES_HINT}")
    return checked


def _build_schedule_callbacks(schedules_config):
    """The scheduler callbacks of `schedules`; each bad schedule is named by its key."""
    from keras_kd import schedules as kd_schedules
    from keras_kd.callbacks import AlphaScheduler, LossWeightScheduler, TemperatureScheduler

    callbacks, problems = [], []
    for name, spec in (schedules_config or {}).items():
        try:
            schedule = kd_schedules.get(spec)
        except (ValueError, TypeError) as error:
            problems.append(f"schedules.{name}: {error}")
            continue
        if name == "temperature":
            callbacks.append(TemperatureScheduler(schedule))
        elif name == "alpha":
            callbacks.append(AlphaScheduler(schedule))
        else:
            callbacks.append(LossWeightScheduler(name, schedule))
    if problems:
        raise UsageError("\n  ".join(["the schedules are malformed:", *problems]) + f"\n{_EXAMPLES_HINT}")
    return callbacks


def _build_optimizer(spec):
    from keras_kd.backend import keras

    try:
        return keras.optimizers.get(spec)
    except (ValueError, TypeError) as error:
        raise UsageError(f"optimizer: {error}; expected {_DISTILL_KEYS['optimizer'].expected}") from None


# ------------------------------------------------------------- a resumable run folder
_CHECKPOINT_DIR = "checkpoint"
_CHECKPOINT_STATE = "state.json"
_RUN_CONFIG = "run_config.json"
_HISTORY = "history.json"
# keys that may change between an interrupted run and its resumption
_RESUMABLE_CHANGES = ("epochs", "output")


def _write_json(path, document):
    from keras_kd.files import atomic_write

    def write(temporary):
        with open(temporary, "w") as handle:
            json.dump(document, handle, indent=2, sort_keys=True, default=str)

    atomic_write(path, write)


def _read_json(path):
    with open(path) as handle:
        return json.load(handle)


def _resume_state(output):
    """{"epoch": N, "weights": path} of the last completed epoch in the run folder, or None."""
    state_path = os.path.join(output, _CHECKPOINT_DIR, _CHECKPOINT_STATE)
    if not os.path.isfile(state_path):
        return None
    try:
        state = _read_json(state_path)
        weights = os.path.join(output, _CHECKPOINT_DIR, state["weights"])
        epoch = int(state["epoch"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UsageError(f"the checkpoint state {state_path!r} cannot be read ({error}); pass --restart to "
                         "start the run again") from None
    if not os.path.isfile(weights):
        raise UsageError(f"the checkpoint {state_path!r} names {weights!r}, which is missing; pass --restart to "
                         "start the run again")
    return {"epoch": epoch, "weights": weights}


def _check_same_run(output, settings):
    stored_path = os.path.join(output, _RUN_CONFIG)
    if not os.path.isfile(stored_path):
        return
    stored = _read_json(stored_path)
    current = json.loads(json.dumps(settings, default=str))
    changed = sorted(key for key in set(stored) | set(current)
                     if key not in _RESUMABLE_CHANGES and stored.get(key) != current.get(key))
    if changed:
        raise UsageError(
            f"the run folder {output!r} holds a checkpoint of a run with other settings (changed: "
            f"{', '.join(changed)}); resuming it with these would mix two runs. Pass --restart to discard the "
            "checkpoint, or --output NEW_FOLDER for a new run"
        )


def _run_callbacks(output, resume_epoch, previous_history):
    """A history file and a checkpoint, both written atomically after every epoch, in that order."""
    from keras_kd.backend import keras
    from keras_kd.files import atomic_write

    checkpoint_dir = os.path.join(output, _CHECKPOINT_DIR)

    class HistoryFile(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.history = {key: list(values[:resume_epoch]) for key, values in previous_history.items()}

        def on_epoch_end(self, epoch, logs=None):
            for key, value in (logs or {}).items():
                self.history.setdefault(key, []).append(float(value))
            _write_json(os.path.join(output, _HISTORY), self.history)

    class Checkpoint(keras.callbacks.Callback):
        """Like keras.callbacks.BackupAndRestore, with the weights and the epoch in one atomic step.

        The weights of epoch N go to `epoch_N.weights.h5`; `state.json`, written
        after them, names the file. A kill at any moment leaves a state naming
        complete weights of the epoch it records.
        """

        def on_train_begin(self, logs=None):
            if resume_epoch:
                optimizer = self.model.optimizer
                if optimizer is not None and not getattr(optimizer, "built", True):
                    optimizer.build(self.model.trainable_variables)
                self.model.load_weights(_resume_state(output)["weights"])

        def on_epoch_end(self, epoch, logs=None):
            os.makedirs(checkpoint_dir, exist_ok=True)
            name = f"epoch_{epoch + 1}.weights.h5"
            atomic_write(os.path.join(checkpoint_dir, name),
                         lambda temporary: self.model.save_weights(temporary, overwrite=True))
            _write_json(os.path.join(checkpoint_dir, _CHECKPOINT_STATE), {"epoch": epoch + 1, "weights": name})
            for entry in os.listdir(checkpoint_dir):
                if entry.startswith("epoch_") and entry.endswith(".weights.h5") and entry != name:
                    with contextlib.suppress(OSError):
                        os.remove(os.path.join(checkpoint_dir, entry))

    history = HistoryFile()
    return history, [history, Checkpoint()]


def _remove_if_unused(output, created):
    """Removes a run folder this command created when nothing worth keeping was written into it."""
    if not created or not os.path.isdir(output):
        return
    if set(os.listdir(output)) <= {_RUN_CONFIG}:
        shutil.rmtree(output, ignore_errors=True)


def cmd_distill(args):
    config = _load_config(args.config)
    settings = validate_distill_config(config, source=repr(args.config))
    output = args.output or settings["output"]
    if os.path.exists(output) and not os.path.isdir(output):
        raise UsageError(f"the run folder {output!r} is a file; pass --output FOLDER")
    settings["output"] = output
    from keras_kd.files import check_writable_folder

    # found now, not after the first epoch: the run folder itself, or the folder it will be created in
    existing = output if os.path.isdir(output) else os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(existing):
        raise UsageError(f"the folder {existing!r} that would hold the run folder {output!r} does not exist")
    check_writable_folder(os.path.join(existing, _HISTORY), "the run folder")
    if args.restart:
        shutil.rmtree(os.path.join(output, _CHECKPOINT_DIR), ignore_errors=True)
    resume = _resume_state(output) if os.path.isdir(output) else None
    if resume is not None:
        _check_same_run(output, settings)

    from keras_kd.backend import keras

    callbacks = _build_schedule_callbacks(settings["schedules"])
    optimizer = _build_optimizer(settings["optimizer"])
    from keras_kd.data import load_dataset
    from keras_kd.schemes import distill

    if args.mixed_precision:
        keras.mixed_precision.set_global_policy(args.mixed_precision)
    keras.utils.set_random_seed(settings["seed"])
    data = load_dataset(settings["dataset"], limit=settings["limit"])
    strategy = _strategy(args.strategy)
    with strategy.scope():
        teacher = _load_model(settings["teacher"], "teacher")
        student = _load_model(settings["student"], "student")
        if settings["qat"]:
            from keras_kd.quantization import quantize_model

            student = quantize_model(student, per_channel=settings["per_channel"])

    created = not os.path.isdir(output)
    os.makedirs(output, exist_ok=True)
    try:
        resume_epoch = 0 if resume is None else resume["epoch"]
        previous = {}
        if resume_epoch and os.path.isfile(os.path.join(output, _HISTORY)):
            previous = _read_json(os.path.join(output, _HISTORY))
        _write_json(os.path.join(output, _RUN_CONFIG), settings)
        history_file, run_callbacks = _run_callbacks(output, resume_epoch, previous)
        if resume_epoch and not args.json:
            print(f"resuming {output} after epoch {resume_epoch} of {settings['epochs']} "
                  f"(checkpoint {os.path.join(output, _CHECKPOINT_DIR)})", flush=True)
        distiller = distill(
            teacher, student, (data.x_train, data.y_train), epochs=settings["epochs"],
            batch_size=settings["batch_size"], optimizer=optimizer, alpha=settings["alpha"],
            temperature=settings["temperature"], distillation_losses=settings["distillation_losses"],
            distillation_loss_weights=settings["distillation_loss_weights"], teacher_dtype=settings["teacher_dtype"],
            augment=_build_augment(settings["augment"]), mixing=settings["mixing"],
            validation_data=(data.x_test, data.y_test), callbacks=[*callbacks, *run_callbacks],
            verbose=0 if args.json else 2, metrics=["accuracy"], initial_epoch=min(resume_epoch, settings["epochs"]),
            strategy=strategy,
        ).model
    except BaseException:
        _remove_if_unused(output, created)
        raise
    from keras_kd.files import atomic_write

    student_path = os.path.join(output, "student.keras")
    atomic_write(student_path, distiller.student.save)
    history = history_file.history
    _write_json(os.path.join(output, _HISTORY), history)
    _write_distill_report(output, teacher, distiller.student, data, history)
    # the student is saved: the checkpoint (teacher, student and optimizer state) is no longer needed
    shutil.rmtree(os.path.join(output, _CHECKPOINT_DIR), ignore_errors=True)
    summary = {"student": student_path, "history": history, "resumed_from_epoch": resume_epoch,
               "optimizer_iterations": int(distiller.optimizer.iterations.numpy()),
               "strategy": type(strategy).__name__, "replicas": strategy.num_replicas_in_sync}
    if args.json:
        _print_json(summary)
    else:
        final = f"{history['val_accuracy'][-1]:.2%}" if history.get("val_accuracy") else "n/a"
        print(f"student saved to {student_path}; final val_accuracy {final}; report: keras-kd report {output}")
    return EXIT_OK


def _write_distill_report(output, teacher, student, data, history):
    """report.md/report.json for `keras-kd report`: the teacher and the distilled student on the test split."""
    import numpy as np

    from keras_kd.report import ReportRow, build_report

    def accuracy(model):
        predictions = model.predict(data.x_test, batch_size=256, verbose=0)
        return float(np.mean(np.argmax(predictions, axis=-1) == np.asarray(data.y_test)))

    rows = [ReportRow("teacher (Keras)", teacher.count_params(), None, accuracy(teacher)),
            ReportRow("distilled student (Keras)", student.count_params(), None, accuracy(student))]
    curriculum = {key: history[key] for key in ("temperature", "alpha") if key in history} or None
    build_report(rows, output, curriculum=curriculum, title=f"keras-kd distill: {os.path.basename(output)}")


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


def cmd_compare(args):
    config = _load_config(args.config)
    settings = validate_distill_config(config, source=repr(args.config))
    if settings["qat"]:
        raise UsageError("compare measures float distillation against its control; set qat: false (quantize the "
                         "student after choosing the recipe)")
    if not isinstance(settings["teacher"], str):
        raise UsageError("compare needs a trained teacher: give teacher as the path of a .keras file (a model "
                         "config would be an untrained teacher)")
    if len(args.seeds) < 2:
        raise UsageError(f"--seeds {' '.join(map(str, args.seeds))}: give at least 2 seeds (3 or more to claim a "
                         "gain); one run cannot tell a gain from noise")
    learning_rate = args.learning_rate
    optimizer = settings["optimizer"]
    if learning_rate is None:
        learning_rate = 1e-3
        if isinstance(optimizer, dict) and isinstance(optimizer.get("config", {}).get("learning_rate"), (int, float)):
            learning_rate = float(optimizer["config"]["learning_rate"])
    _build_schedule_callbacks(settings["schedules"])  # bad schedules fail before any training

    from keras_kd.backend import keras
    from keras_kd.control import compare_with_control
    from keras_kd.data import load_dataset

    data = load_dataset(settings["dataset"], limit=settings["limit"])
    teacher = _load_model(settings["teacher"], "teacher")
    template = _load_model(settings["student"], "student")
    variant = {"alpha": settings["alpha"], "temperature": settings["temperature"],
               "distillation_losses": settings["distillation_losses"],
               "distillation_loss_weights": settings["distillation_loss_weights"],
               "teacher_dtype": settings["teacher_dtype"]}
    report = compare_with_control(
        teacher, lambda seed: keras.models.clone_model(template), (data.x_train, data.y_train),
        (data.x_test, data.y_test), variants={"distilled": variant}, seeds=args.seeds, epochs=settings["epochs"],
        batch_size=settings["batch_size"], learning_rate=learning_rate, augment=_build_augment(settings["augment"]),
        mixing=settings["mixing"], callbacks=lambda: _build_schedule_callbacks(settings["schedules"]),
        verbose=0 if args.json else 1)
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report)
    return EXIT_OK


def cmd_export(args):
    from keras_kd.export import ExportValidationError, to_tflite

    if not os.path.isfile(args.model):
        raise UsageError(f"no model file at {args.model!r}")
    calibration = _load_array(args.calibration, "--calibration")[0] if args.calibration else None
    model = args.model
    if args.quantization == "int8" and calibration is None:
        from keras_kd.export._convert import is_quantization_aware
        from keras_kd.saving import load_model

        model = load_model(args.model, compile=False)
        if not is_quantization_aware(model):
            shape = ", ".join("?" if d is None else str(d) for d in tuple(model.inputs[0].shape)[1:])
            raise UsageError(
                f"post-training INT8 of the float model {args.model!r} needs calibration inputs: pass "
                f"--calibration FILE.npy (an array of a few hundred training inputs, shape (N, {shape}), "
                "preprocessed like training; or an .npz with x), or choose --quantization float16, dynamic or none"
            )
    validation = None
    if args.validation:
        x, y = _load_array(args.validation, "--validation")
        validation = (x, y) if y is not None else x
    output = args.output or os.path.splitext(args.model)[0] + (
        f"_{args.quantization}.tflite" if args.quantization != "none" else ".tflite")
    try:
        report = to_tflite(model, output, quantization=None if args.quantization == "none" else args.quantization,
                           representative_data=calibration, io_dtype=args.io_dtype, validation_data=validation,
                           min_agreement=args.min_agreement, allow_select_tf_ops=args.allow_select_tf_ops,
                           strip_names=args.strip_names, batch_size=args.batch_size)
    except ExportValidationError as error:
        print(f"keras-kd export: {error}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        _print_json(report.to_dict())
    else:
        print(f"wrote {report.path} ({report.size_bytes:,} bytes, {report.quantization or 'float32'}); ops: "
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
                                             use_nnapi=args.use_nnapi, use_xnnpack=not args.no_xnnpack,
                                             warmup_runs=args.warmup, num_runs=args.runs, cpu_mask=args.cpu_mask)
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
    from keras_kd.report import load_report, render_history, render_markdown

    if not os.path.isdir(args.run_dir):
        raise UsageError(f"no run folder at {args.run_dir!r}")
    if not os.path.isfile(os.path.join(args.run_dir, "report.json")):
        history_path = os.path.join(args.run_dir, _HISTORY)
        if not os.path.isfile(history_path):
            raise UsageError(
                f"{args.run_dir!r} holds neither report.json nor {_HISTORY}: pass the folder of a "
                "`keras-kd quickstart` or `keras-kd distill` run"
            )
        history = _read_json(history_path)  # a distill run still training, or interrupted
        if args.json:
            _print_json({"history": history})
        else:
            print(render_history(history, title=f"{args.run_dir}: training history (no report.json yet)"))
        return EXIT_OK
    report = load_report(args.run_dir)
    if args.json:
        _print_json(report)
    else:
        print(render_markdown(report["rows"], title=report.get("title")))
    return EXIT_OK


# -------------------------------------------------------------------- parser
def _examples_folder():
    """The example configs' folder when keras_kd runs from its repository (an editable install), else None."""
    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "configs")
    return folder if os.path.isdir(folder) else None


def build_parser():
    """The argparse parser of `keras-kd` (every subcommand documented in its --help)."""
    parser = argparse.ArgumentParser(
        prog="keras-kd",
        description="Knowledge distillation for Keras, to a verified INT8 .tflite with measured latency.",
        epilog="Exit codes: 0 success, 1 the work failed, 2 bad input. Example distill configs: "
               f"{EXAMPLE_CONFIGS}" + (f" ({_examples_folder()})" if _examples_folder() else "") + ".",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true",
                        help="also show TensorFlow's and LiteRT's own log lines (hidden by default)")

    p = sub.add_parser("quickstart", parents=[common],
                       help="teacher -> students -> INT8 -> verification -> latency -> report",
                       description="Runs the whole pipeline on offline data and writes a report (about 3-6 minutes "
                                   "on 2 CPU cores with the defaults).")
    p.add_argument("--dataset", default="mnist5k",
                   help="mnist5k (offline, default), digits, fashion_mnist, keras:NAME (needs a network) or a .npz")
    p.add_argument("--out", default=QUICKSTART_OUTPUT, help=f"run folder (default: {QUICKSTART_OUTPUT})")
    p.add_argument("--teacher-epochs", type=int, default=6)
    p.add_argument("--epochs", type=int, default=8, help="student training epochs (scratch and distilled)")
    p.add_argument("--qat-epochs", type=int, default=3, help="quantization-aware distillation epochs")
    p.add_argument("--limit", type=int, default=None, help="use at most this many samples of each split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action="store_true", help="show Keras progress bars")
    p.add_argument("--json", action="store_true", help="print the result as JSON only")
    p.set_defaults(func=cmd_quickstart)

    p = sub.add_parser("distill", parents=[common], help="distil a student from a teacher as a YAML/JSON config says",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Config keys (a YAML or JSON mapping):\n"
                                   + "\n".join(f"  {key.name}: {key.expected}"
                                                + (" (required)" if key.required else
                                                   f" (default {json.dumps(key.default)})")
                                                for key in DISTILL_CONFIG)
                                   + f"\n\nExample configs: {EXAMPLE_CONFIGS} in the keras_kd repository"
                                   + (f" ({_examples_folder()})" if _examples_folder() else "")
                                   + ".\nThe run folder gets a checkpoint after every epoch: run the same "
                                     "command again to resume an interrupted run.")
    p.add_argument("config", help="a .yaml/.yml/.json file")
    p.add_argument("--strategy", default="auto", choices=["auto", "default", "mirrored", "multiworker", "tpu"],
                   help="tf.distribute strategy (auto: mirrored over several GPUs, else the default)")
    p.add_argument("--mixed-precision", nargs="?", const="mixed_bfloat16", default=None,
                   choices=["mixed_float16", "mixed_bfloat16"], help="Keras mixed-precision policy")
    p.add_argument("--output", default=None, help="run folder (overrides the config's output)")
    p.add_argument("--restart", action="store_true",
                   help="discard the run folder's checkpoint and train from the first epoch")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("compare", parents=[common],
                       help="does the teacher help? a distill config's student against its control, over seeds",
                       description="Trains, for each seed, the config's student on labels alone (the control) and "
                                   "distilled as the config says, from the same initial weights, with the same "
                                   "augment/mixing, epochs, batch size and Adam with a cosine-decayed learning "
                                   "rate; prints test errors (mean and spread) and the fraction of the "
                                   "control-to-teacher gap closed. The teacher must be a trained .keras file.")
    p.add_argument("config", help="a keras-kd distill config (.yaml/.yml/.json); output and qat are not used")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="at least 2 (default: 0 1 2)")
    p.add_argument("--learning-rate", type=float, default=None,
                   help="Adam's initial learning rate (default: the config optimizer's, else 0.001)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("export", parents=[common], help="convert a .keras model to .tflite (INT8 by default), verified")
    p.add_argument("model", help="a .keras file")
    p.add_argument("--quantization", default="int8", choices=["int8", "float16", "dynamic", "none"])
    p.add_argument("--calibration", help=".npy/.npz of representative inputs (needed for INT8 of a float model)")
    p.add_argument("--validation", help=".npz with x (and y) to check the file against the model")
    p.add_argument("--min-agreement", type=float, default=0.99)
    p.add_argument("--io-dtype", choices=["int8", "uint8", "float32"], default=None)
    p.add_argument("--allow-select-tf-ops", action="store_true", help="allow Flex ops (needs the Flex delegate)")
    p.add_argument("--strip-names", action="store_true",
                   help="drop the names of intermediate tensors (a smaller file; compare_layers needs them)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="fix the file's batch dimension (1 for the device: shapes that depend on the batch are "
                        "then constants, which XNNPACK runs); default: dynamic")
    p.add_argument("--output", help="output path (default: beside the model)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("benchmark", parents=[common], help="latency of a .tflite on this host or on an Android phone")
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

    p = sub.add_parser("report", parents=[common], help="print the report of a run folder")
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_report)
    return parser


class _ProductOutputOnly:
    """Hides TensorFlow's, XLA's and LiteRT's own log lines; the command's own output stays.

    Native libraries write to file descriptor 2 directly (some before any log
    level is read: "All log messages before absl::InitializeLog()", the CUDA
    `cuInit` error on a machine without a GPU). While the command runs, fd 2
    goes to a temporary file and Python's `sys.stderr` to the real stderr, so
    the command's errors and Python warnings still show; TensorFlow's Python
    logger (tf.function retracing warnings) is raised to ERROR. When the
    command fails, the hidden lines are said to exist (`--verbose` shows them).
    """

    def __init__(self):
        self.hidden = None
        self._saved_fd = None
        self._saved_stderr = None
        self._saved_level = None

    def __enter__(self):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        tf_logger = logging.getLogger("tensorflow")
        self._saved_level = tf_logger.level
        tf_logger.setLevel(logging.ERROR)
        try:
            sys.stderr.flush()
            self.hidden = tempfile.TemporaryFile()
            self._saved_fd = os.dup(2)
        except (OSError, ValueError):  # no usable fd 2 (an embedded interpreter): nothing to hide
            self.hidden = None
            return self
        if sys.stderr is sys.__stderr__ and sys.stderr is not None:
            self._saved_stderr = sys.stderr
            sys.stderr = open(os.dup(self._saved_fd), "w", buffering=1, encoding=sys.stderr.encoding,
                              errors="backslashreplace")
        os.dup2(self.hidden.fileno(), 2)
        return self

    def hidden_lines(self):
        if self.hidden is None:
            return 0
        self.hidden.seek(0)
        return sum(1 for _ in self.hidden)

    def __exit__(self, *exc_info):
        logging.getLogger("tensorflow").setLevel(self._saved_level)
        if self._saved_fd is None:
            return False
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os.dup2(self._saved_fd, 2)
        os.close(self._saved_fd)
        if self._saved_stderr is not None:
            sys.stderr.close()
            sys.stderr = self._saved_stderr
        return False


def main(argv=None):
    """Entry point of the `keras-kd` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet = contextlib.nullcontext() if args.verbose else _ProductOutputOnly()
    with quiet:
        code = _run(args)
    if code not in (EXIT_OK, EXIT_USAGE) and not args.verbose and quiet.hidden_lines():
        print(f"keras-kd {args.command}: {quiet.hidden_lines()} lines of TensorFlow's own log were hidden; "
              "run again with --verbose to see them", file=sys.stderr)
    if quiet is not None and getattr(quiet, "hidden", None) is not None:
        quiet.hidden.close()
    return code


def _run(args):
    try:
        return args.func(args)
    except UsageError as error:
        print(f"keras-kd {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, PermissionError) as error:
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
