#!/usr/bin/env python
"""Training throughput of distillation, side by side with plain student training.

Measures samples/s of five ways to train the same student on MNIST-shaped data
(`keras_kd.data.load_dataset("mnist5k")`), with a CNN teacher of about 8x the
student's parameters, in one run:

1. `student-only`: `student.compile(...).fit` with sparse cross-entropy from logits;
2. `keras_kd`: `keras_kd.Distiller`, float32 teacher run every step;
3. `keras_kd-cached`: `keras_kd.Distiller` on `keras_kd.cache_teacher_outputs`
   (the teacher ran once beforehand; that one-off time is printed apart);
4. `keras_kd-bf16`: `keras_kd.Distiller(..., teacher_dtype="bfloat16")`;
5. `keras.distillation`: Keras' own `keras.distillation.Distiller` with a correct
   soft-target KL, `LogitsDistillation(temperature=T, loss=keras.losses.KLDivergence())`
   (Keras special-cases a `KLDivergence` instance to softmax both sides and
   multiply by `T**2`; its default string `"kl_divergence"` is applied to raw
   logits, which is not the soft-target loss).

Every variant uses the same batch size, the same optimizer (Adam, lr 1e-3), the
same student initial weights, the same `tf.data` pipeline shape (shuffle, batch,
prefetch), no metrics, `alpha = student_loss_weight = 0.5`, the same temperature,
and `jit_compile=False` (XLA is 1.5-2.5x *slower* for these small CNNs on the
CPUs we run on; `--xla` measures that too).

Timing: a callback stores `time.perf_counter()` at every `on_train_batch_end`;
a step's time is the gap between two consecutive batch ends (the whole step:
input pipeline, forward/backward, optimizer, logs). Every variant first runs an
untimed `fit` that traces its step function. Then the variants run interleaved
in `--rounds` short rounds, the order rotated each round (ABCDE BCDEA ...), so
that every variant sees the same share of the load other processes put on a
shared machine. In each round's `fit` the first `--warmup` steps (new
iterator, shuffle buffer) are dropped and the median step time of the rest is
taken, which is immune to the ~1 s stalls that shared machines show; each
figure is the median of the per-round medians. The process CPU time per step
(`time.process_time()`, all threads) is reported beside it: it moves much less
than wall time when other processes share the cores, so its ratios are a
cross-check of the wall-clock ones. So is the "paired" ratio: the median over
rounds of the ratio of the two variants' medians within the same round, which
cancels load that changes from one round to the next.

Run from the repository root:

    python benchmarks/distill_throughput.py                  # ~2.5 min on 2 cores
    python benchmarks/distill_throughput.py --quick          # smoke test, < 1 min
    python benchmarks/distill_throughput.py --json out.json  # also write the figures
    python benchmarks/distill_throughput.py --student small  # a 3 ms student step: the Distiller's own cost
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

# Measure the checkout this script sits in, installed or not.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from keras_kd.backend import LEGACY_KERAS, keras, tf  # noqa: E402
from keras_kd.cache import cache_teacher_outputs  # noqa: E402
from keras_kd.data import load_dataset  # noqa: E402
from keras_kd.distiller import Distiller  # noqa: E402

STUDENT_ONLY = "student-only"
KD = "keras_kd"
KD_CACHED = "keras_kd-cached"
KD_BF16 = "keras_kd-bf16"
KERAS_DISTILLATION = "keras.distillation"
STUDENT_ONLY_XLA = "student-only-xla"
KD_XLA = "keras_kd-xla"

# (name, numerator, denominator, target or None, expected value or None), per --student setting. With the
# small student (about 3 ms a step) the Distiller's own per-step work is a large share of the step, so the
# targets on it are stricter there.
RATIOS = {
    "default": (
        ("keras_kd/keras.distillation", KD, KERAS_DISTILLATION, 1.0, None),
        ("keras_kd-bf16/keras.distillation", KD_BF16, KERAS_DISTILLATION, 1.3, None),
        ("cached/student-only", KD_CACHED, STUDENT_ONLY, 0.9, None),
        ("uncached/student-only", KD, STUDENT_ONLY, None, 0.23),
    ),
    "small": (
        ("keras_kd/keras.distillation", KD, KERAS_DISTILLATION, 1.05, None),
        ("keras_kd-bf16/keras.distillation", KD_BF16, KERAS_DISTILLATION, 1.3, None),
        ("cached/student-only", KD_CACHED, STUDENT_ONLY, 0.95, None),
        ("uncached/student-only", KD, STUDENT_ONLY, None, None),
    ),
}
XLA_RATIOS = (
    ("student-only xla/no-xla", STUDENT_ONLY_XLA, STUDENT_ONLY, None, None),
    ("keras_kd xla/no-xla", KD_XLA, KD, None, None),
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny run for a smoke test (few samples, steps and one round)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds of all variants (default 9)")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size of every variant (default 128)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per variant per round (default 60)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="steps dropped at the start of every timed fit (default 3)")
    parser.add_argument("--temperature", type=float, default=4.0, help="distillation temperature (default 4)")
    parser.add_argument("--student", choices=sorted(STUDENTS), default="default",
                        help="the student: 'default' (28k parameters, about 9 ms a step) or 'small' (about 3 ms a "
                             "step, where the Distiller's own per-step work shows most)")
    parser.add_argument("--xla", action="store_true",
                        help="also time student-only and keras_kd with jit_compile=True")
    parser.add_argument("--json", metavar="PATH", help="write all figures to this JSON file")
    args = parser.parse_args(argv)
    defaults = dict(rounds=1, batch_size=32, steps=6, warmup=2) if args.quick else \
        dict(rounds=9, batch_size=128, steps=60, warmup=3)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("rounds", "batch_size", "steps"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    if args.warmup < 1:
        parser.error(f"--warmup must be >= 1 (the first step of a fit waits for a new iterator), got {args.warmup}")
    if args.temperature <= 0:
        parser.error(f"--temperature must be > 0, got {args.temperature}")
    return args


# ------------------------------------------------------------------ models
def build_teacher(input_shape, classes):
    """About 232k parameters (8.4x the student) and about 100x its multiply-adds.

    Three 3x3 "same" convolutions (32 and 64 filters at full resolution, 64 at half) and a 56-unit
    dense layer: parameters sit in the dense head, compute in the convolutions, as in real teachers.
    Its forward pass costs several student training steps, the regime the issue's reference (uncached
    KD at about 0.23x student-only speed) describes; a teacher whose forward is cheaper than a student
    step would hide what caching and a bfloat16 teacher buy.
    """
    init = keras.initializers.GlorotUniform(seed=11)
    return keras.Sequential([
        keras.Input(input_shape),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu", kernel_initializer=init),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu", kernel_initializer=init),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu", kernel_initializer=init),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(56, activation="relu", kernel_initializer=init),
        keras.layers.Dense(classes, kernel_initializer=init),
    ], name="teacher")


def build_student(input_shape, classes, name="student"):
    """About 28k parameters: two "valid" 3x3 convolutions (8, 16 filters) with pooling and a 64-unit dense layer."""
    init = keras.initializers.GlorotUniform(seed=12)
    return keras.Sequential([
        keras.Input(input_shape),
        keras.layers.Conv2D(8, 3, activation="relu", kernel_initializer=init),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, 3, activation="relu", kernel_initializer=init),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu", kernel_initializer=init),
        keras.layers.Dense(classes, kernel_initializer=init),
    ], name=name)


def build_small_student(input_shape, classes, name="student"):
    """About 7k parameters: one strided 3x3 convolution (4 filters) with pooling and the classifier."""
    init = keras.initializers.GlorotUniform(seed=12)
    return keras.Sequential([
        keras.Input(input_shape),
        keras.layers.Conv2D(4, 3, strides=2, activation="relu", kernel_initializer=init),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(classes, kernel_initializer=init),
    ], name=name)


STUDENTS = {"default": build_student, "small": build_small_student}


def optimizer():
    return keras.optimizers.Adam(learning_rate=1e-3)


def sparse_ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


# ------------------------------------------------------------------ timing
class StepTimer(keras.callbacks.Callback):
    """Stores wall and process CPU time at every batch end (overriding it keeps callbacks synchronous)."""

    def __init__(self):
        super().__init__()
        self.wall = []
        self.cpu = []

    def on_train_begin(self, logs=None):
        self.wall = [time.perf_counter()]
        self.cpu = [time.process_time()]

    def on_train_batch_end(self, batch, logs=None):
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())


def timed_fit(model, dataset, steps, warmup):
    """Median wall and CPU seconds per step of one `fit`, the first `warmup` steps dropped."""
    timer = StepTimer()
    model.fit(dataset, epochs=1, steps_per_epoch=warmup + steps, verbose=0, callbacks=[timer])
    wall = np.diff(timer.wall)[warmup:]
    cpu = np.diff(timer.cpu)[warmup:]
    if len(wall) != steps:
        raise RuntimeError(f"expected {steps} timed steps, recorded {len(wall)}; did the dataset run out?")
    return float(np.median(wall)), float(np.median(cpu))


# ------------------------------------------------------------------ setup
def machine_info():
    model_name = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model_name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return {"cpu": model_name, "cores": usable, "python": platform.python_version(),
            "tensorflow": tf.__version__, "keras": keras.__version__}


def plain_dataset(x, y, batch_size, seed=0):
    """Shuffled, batched, prefetched and repeated: the same pipeline shape as the teacher cache."""
    return (tf.data.Dataset.from_tensor_slices((x, y))
            .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
            .batch(batch_size).prefetch(tf.data.AUTOTUNE).repeat())


def teacher_logits(model_or_distiller, x, batch_size):
    """Teacher logits over `x` through `cache_teacher_outputs` (so a Distiller's `teacher_dtype` applies)."""
    dataset = cache_teacher_outputs(model_or_distiller, x, batch_size=batch_size, shuffle=False)
    return np.concatenate([target["teacher_outputs"]["final_output"].numpy() for _, target in dataset])


def count_params(model):
    return int(sum(np.prod(w.shape) for w in model.weights))


# ------------------------------------------------------------------ main
def run(args):
    if LEGACY_KERAS or not hasattr(keras, "distillation"):
        raise SystemExit(
            "This benchmark compares against keras.distillation, which needs Keras >= 3.12 (found "
            f"{keras.__version__}). Unset TF_USE_LEGACY_KERAS or upgrade Keras."
        )
    keras.utils.set_random_seed(0)
    data = load_dataset("mnist5k", limit=400 if args.quick else None)
    # Whole batches only: a smaller last batch would retrace the step function mid-run.
    usable = (len(data.x_train) // args.batch_size) * args.batch_size
    if usable == 0:
        raise SystemExit(f"--batch-size {args.batch_size} exceeds the {len(data.x_train)} training samples.")
    x_train, y_train = data.x_train[:usable], data.y_train[:usable]
    temperature = args.temperature

    teacher = build_teacher(data.input_shape, data.num_classes)
    teacher.compile(optimizer=optimizer(), loss=sparse_ce(), metrics=["accuracy"], jit_compile=False)
    started = time.perf_counter()
    teacher.fit(x_train, y_train, epochs=1 if args.quick else 3, batch_size=args.batch_size, verbose=0)
    teacher_train_s = time.perf_counter() - started
    teacher_accuracy = float(teacher.evaluate(data.x_test, data.y_test, verbose=0)[1])

    make_student = STUDENTS[args.student]
    template = make_student(data.input_shape, data.num_classes, name="student_template")
    initial_weights = template.get_weights()

    def fresh_student(name):
        student = make_student(data.input_shape, data.num_classes, name=name)
        student.set_weights(initial_weights)
        return student

    plain = plain_dataset(x_train, y_train, args.batch_size)
    started = time.perf_counter()
    cached = cache_teacher_outputs(teacher, x_train, y_train, batch_size=args.batch_size, shuffle=True, seed=0)
    caching_s = time.perf_counter() - started
    cached = cached.repeat()

    def student_only(jit):
        student = fresh_student("student_only")
        student.compile(optimizer=optimizer(), loss=sparse_ce(), jit_compile=jit)
        return student, plain

    def keras_kd_distiller(jit=False, teacher_dtype=None, from_cache=False):
        distiller = Distiller(teacher=teacher, student=fresh_student("student_kd"), alpha=0.5,
                              temperature=temperature, teacher_dtype=teacher_dtype)
        distiller.compile(optimizer=optimizer(), jit_compile=jit)
        return distiller, cached if from_cache else plain

    def keras_distillation():
        loss = keras.distillation.LogitsDistillation(temperature=temperature, loss=keras.losses.KLDivergence())
        distiller = keras.distillation.Distiller(teacher=teacher, student=fresh_student("student_keras"),
                                                 distillation_losses=loss, student_loss_weight=0.5)
        distiller.compile(optimizer=optimizer(), loss=sparse_ce(), jit_compile=False)
        return distiller, plain

    builders = {
        STUDENT_ONLY: lambda: student_only(False),
        KD: lambda: keras_kd_distiller(),
        KD_CACHED: lambda: keras_kd_distiller(from_cache=True),
        KD_BF16: lambda: keras_kd_distiller(teacher_dtype="bfloat16"),
        KERAS_DISTILLATION: keras_distillation,
    }
    if args.xla:
        builders[STUDENT_ONLY_XLA] = lambda: student_only(True)
        builders[KD_XLA] = lambda: keras_kd_distiller(jit=True)
    # Built and traced once: the timed rounds reuse the step functions; each fit makes a new iterator.
    variants = {name: build() for name, build in builders.items()}
    for model, dataset in variants.values():
        model.fit(dataset, epochs=1, steps_per_epoch=2, verbose=0)

    names = list(variants)
    per_round = {name: [] for name in names}
    cpu_per_round = {name: [] for name in names}
    for round_index in range(args.rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            model, dataset = variants[name]
            wall, cpu = timed_fit(model, dataset, args.steps, args.warmup)
            per_round[name].append(wall)
            cpu_per_round[name].append(cpu)
        print(f"round {round_index + 1}/{args.rounds}: " + ", ".join(
            f"{name} {1e3 * per_round[name][-1]:.1f} ms" for name in names), flush=True)

    step_s = {name: statistics.median(times) for name, times in per_round.items()}
    cpu_step_s = {name: statistics.median(times) for name, times in cpu_per_round.items()}
    samples_per_s = {name: args.batch_size / seconds for name, seconds in step_s.items()}

    float_logits = teacher_logits(variants[KD][0], data.x_test, args.batch_size)
    bf16_logits = teacher_logits(variants[KD_BF16][0], data.x_test, args.batch_size)
    agreement = float(np.mean(np.argmax(float_logits, -1) == np.argmax(bf16_logits, -1)))
    bf16_accuracy = float(np.mean(np.argmax(bf16_logits, -1) == data.y_test))

    ratios = {}
    for label, numerator, denominator, target, expected in RATIOS[args.student] + (XLA_RATIOS if args.xla else ()):
        value = float(samples_per_s[numerator] / samples_per_s[denominator])
        ratios[label] = {"value": value, "target": target, "expected": expected,
                         "met": None if target is None else bool(value >= target),
                         "paired_value": statistics.median(
                             d / n for n, d in zip(per_round[numerator], per_round[denominator])),
                         "cpu_time_value": float(cpu_step_s[denominator] / cpu_step_s[numerator])}

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "machine": machine_info(),
        "config": {"quick": args.quick, "rounds": args.rounds, "batch_size": args.batch_size,
                   "steps": args.steps, "warmup": args.warmup, "temperature": temperature,
                   "train_samples": int(usable), "test_samples": int(len(data.x_test)),
                   "teacher_params": count_params(teacher), "student": args.student,
                   "student_params": count_params(template),
                   "jit_compile": False, "xla_measured": args.xla},
        "teacher_train_s": teacher_train_s,
        "teacher_test_accuracy": teacher_accuracy,
        "teacher_bf16_test_accuracy": bf16_accuracy,
        "bf16_vs_float_top1_agreement": agreement,
        "caching_s": caching_s,
        "step_ms": {name: 1e3 * seconds for name, seconds in step_s.items()},
        "step_ms_per_round": {name: [1e3 * t for t in times] for name, times in per_round.items()},
        "cpu_ms_per_step": {name: 1e3 * seconds for name, seconds in cpu_step_s.items()},
        "samples_per_s": samples_per_s,
        "ratios": ratios,
    }


def report(results):
    config, machine = results["config"], results["machine"]
    print()
    print(f"distill_throughput  {results['date']}  {machine['cpu']}, {machine['cores']} cores, "
          f"TF {machine['tensorflow']}, Keras {machine['keras']}")
    print(f"teacher {config['teacher_params']:,} params (test acc {results['teacher_test_accuracy']:.3f}), "
          f"student {config['student_params']:,} params "
          f"({config['teacher_params'] / config['student_params']:.1f}x); batch {config['batch_size']}, "
          f"{config['steps']} timed steps x {config['rounds']} rounds, T={config['temperature']:g}, jit_compile=False")
    print()
    print(f"{'variant':<22}{'ms/step':>10}{'samples/s':>12}{'CPU ms/step':>13}   per-round ms/step")
    for name, ms in results["step_ms"].items():
        rounds = " ".join(f"{t:.1f}" for t in results["step_ms_per_round"][name])
        print(f"{name:<22}{ms:>10.2f}{results['samples_per_s'][name]:>12.0f}"
              f"{results['cpu_ms_per_step'][name]:>13.2f}   {rounds}")
    print(f"one-off teacher caching ({config['train_samples']} samples): {results['caching_s']:.2f} s "
          "(not in the keras_kd-cached step time)")
    print()
    for label, ratio in results["ratios"].items():
        if ratio["target"] is not None:
            verdict = f"target >= {ratio['target']:.2f}x: {'met' if ratio['met'] else 'MISSED'}"
        elif ratio["expected"] is not None:
            verdict = f"expected about {ratio['expected']:.2f}x"
        else:
            verdict = "for information"
        print(f"ratio {label:<34}{ratio['value']:>6.2f}x   ({verdict}; paired per-round "
              f"{ratio['paired_value']:.2f}x, CPU time {ratio['cpu_time_value']:.2f}x)")
    print(f"bf16-teacher vs float-teacher top-1 agreement on {config['test_samples']} test samples: "
          f"{100 * results['bf16_vs_float_top1_agreement']:.2f}% "
          f"(test acc float {results['teacher_test_accuracy']:.3f}, bf16 {results['teacher_bf16_test_accuracy']:.3f})")


def write_json(results, path):
    """Atomic write: a temp file in the same folder, then a rename."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, temp_path = tempfile.mkstemp(prefix=".distill_throughput_", suffix=".json", dir=folder)
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(results, stream, indent=2)
        os.replace(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.remove(temp_path)
        raise


def main(argv=None):
    args = parse_args(argv)
    results = run(args)
    report(results)
    if args.json:
        write_json(results, args.json)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
