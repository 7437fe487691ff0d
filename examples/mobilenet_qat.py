#!/usr/bin/env python
"""Distil a CNN teacher into a keras.applications MobileNetV3Small, then into a verified INT8 file.

The network people ship, carried the whole way on offline data (MNIST digits
from `load_dataset("mnist5k")`, resized to 32x32 RGB pixels in [0, 255]):

1. train a float CNN teacher on the labels;
2. distil `keras.applications.MobileNetV3Small` (random init, its own Rescaling
   preprocessing inside, hard-swish, squeeze-excite) from it with `keras_kd.Distiller`;
3. `quantize_model(student)`: the same network laid out as TFLite runs it in int8
   (BatchNormalization folded, hard-swish and the SE gates in their int8 ops);
4. quantization-aware distillation from the same float teacher (QAT student,
   float teacher);
5. `to_tflite(..., validation_data=...)`: an all-int8 file checked against the QAT
   model before it is written, and its host latency beside the float file's.

Run from the repository root:

    python examples/mobilenet_qat.py                                  # ~6 min on 2 cores
    python examples/mobilenet_qat.py --limit 400 --teacher-epochs 1 --epochs 1 --qat-epochs 1

`benchmarks/qat_networks.py` reuses `load_rgb_digits`, `build_rgb_teacher` and
`shorten_batch_norm_memory` from here.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# Run the checkout this script sits in, installed or not.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import keras_kd  # noqa: E402
from keras_kd.backend import keras, tf  # noqa: E402

__all__ = ["load_rgb_digits", "build_rgb_teacher", "build_student", "shorten_batch_norm_memory", "main"]

BATCH_SIZE = 64


def load_rgb_digits(size=32, limit=None, seed=0):
    """mnist5k as `size` x `size` RGB pixels in [0, 255] (what keras.applications expect).

    Returns:
        `(x_train, y_train, x_test, y_test)`, float32 images and int32 labels.
    """
    data = keras_kd.load_dataset("mnist5k", limit=limit, seed=seed)

    def convert(x):
        x = tf.image.resize(x, (size, size), method="bilinear").numpy()
        return np.repeat(np.clip(x, 0.0, 1.0) * 255.0, 3, axis=-1).astype(np.float32)

    return convert(data.x_train), data.y_train, convert(data.x_test), data.y_test


def build_rgb_teacher(input_shape=(32, 32, 3), num_classes=10):
    """A plain CNN teacher for 32x32 RGB digits (about 0.6 M parameters), logits out."""
    layers = keras.layers
    inputs = keras.Input(input_shape, name="pixels")
    x = layers.Rescaling(1.0 / 255.0)(inputs)
    for filters in (32, 64, 128):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
        x = layers.MaxPooling2D()(x)
    x = layers.Dropout(0.3)(layers.Flatten()(x))
    x = layers.Dense(256, activation="relu")(x)
    return keras.Model(inputs, layers.Dense(num_classes, name="logits")(x), name="teacher")


def shorten_batch_norm_memory(model, momentum=0.9):
    """Sets every BatchNormalization's momentum; returns `model`.

    keras.applications use 0.999, tuned for ImageNet-length schedules: over a
    few hundred steps the moving statistics stay near their initial values and
    inference accuracy is far below training accuracy.
    """
    from keras_kd.quantization.graph import all_layers

    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
    return model


def build_student(input_shape=(32, 32, 3), num_classes=10):
    """keras.applications.MobileNetV3Small with its preprocessing inside, logits out."""
    student = keras.applications.MobileNetV3Small(
        input_shape=input_shape, weights=None, classes=num_classes, include_preprocessing=True,
        classifier_activation=None, dropout_rate=0.1,
    )
    return shorten_batch_norm_memory(student)


def _accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, batch_size=256, verbose=0), axis=-1) == y))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="samples per split (default: all 4000/1000)")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--teacher-epochs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10, help="float distillation epochs")
    parser.add_argument("--qat-epochs", type=int, default=3, help="quantization-aware distillation epochs")
    parser.add_argument("--out", default="mobilenet_qat_out", help="folder for the .tflite files")
    args = parser.parse_args(argv)
    from keras_kd.benchmark import benchmark_tflite
    from keras_kd.export import evaluate_tflite, to_tflite
    from keras_kd.quantization import quantize_model

    keras.utils.set_random_seed(0)
    os.makedirs(args.out, exist_ok=True)
    x_train, y_train, x_test, y_test = load_rgb_digits(args.size, args.limit)
    shape = x_train.shape[1:]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    teacher = build_rgb_teacher(shape)
    teacher.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    teacher.fit(x_train, y_train, epochs=args.teacher_epochs, batch_size=BATCH_SIZE, verbose=0)

    student = build_student(shape)
    schedule = keras.optimizers.schedules.CosineDecay(2e-3, args.epochs * -(-len(x_train) // BATCH_SIZE))
    keras_kd.Distiller(teacher=teacher, student=student).compile(
        optimizer=keras.optimizers.Adam(schedule), metrics=["accuracy"]
    ).fit(x_train, y_train, epochs=args.epochs, batch_size=BATCH_SIZE, verbose=0)

    qat_student = quantize_model(student)
    keras_kd.Distiller(teacher=teacher, student=qat_student).compile(
        optimizer=keras.optimizers.Adam(1e-4), metrics=["accuracy"]
    ).fit(x_train, y_train, epochs=args.qat_epochs, batch_size=BATCH_SIZE, verbose=0)

    float_path = os.path.join(args.out, "mobilenet_v3_small_float32.tflite")
    int8_path = os.path.join(args.out, "mobilenet_v3_small_int8.tflite")
    to_tflite(student, float_path, quantization=None)
    report = to_tflite(qat_student, int8_path, validation_data=(x_test, y_test), min_agreement=0.95)
    int8_accuracy = evaluate_tflite(int8_path, x_test, y_test).accuracy
    float_latency = benchmark_tflite(float_path, num_threads=1, num_runs=50)
    int8_latency = benchmark_tflite(int8_path, num_threads=1, num_runs=50)

    rows = [
        ("teacher (Keras)", _accuracy(teacher, x_test, y_test)),
        ("MobileNetV3Small distilled (Keras)", _accuracy(student, x_test, y_test)),
        ("MobileNetV3Small QAT-distilled (Keras)", _accuracy(qat_student, x_test, y_test)),
        ("MobileNetV3Small INT8 .tflite", int8_accuracy),
    ]
    for name, accuracy in rows:
        print(f"{name:40s} {accuracy:.4f}")
    validation = report.validation
    print(f"agreement: {validation.agreement:.4f} of {validation.num_samples} (INT8 file vs QAT Keras model)")
    print(f"float ops in the INT8 file: {report.float_ops or 'none'}; input {report.input_dtype}, "
          f"output {report.output_dtype}")
    print(f"size: {os.path.getsize(float_path) / 1024:.1f} KB float32, {report.size_bytes / 1024:.1f} KB int8 "
          f"({report.size_bytes / os.path.getsize(float_path):.2f}x)")
    print(f"host latency (1 thread, p50): float32 {float_latency.p50_ms:.3f} ms, int8 {int8_latency.p50_ms:.3f} ms "
          f"({float_latency.p50_ms / int8_latency.p50_ms:.2f}x faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
