#!/usr/bin/env python
"""QAT distillation of the networks people ship, to verified all-int8 files: accuracy, agreement, cost, size, latency.

For each student (keras.applications MobileNetV2 0.35, MobileNetV3Small and Large with
and without their preprocessing, EfficientNetB0, keras-hub's MobileNet and EfficientNet
backbones when keras-hub is installed (small configs for 2 cores, and the configs of its
`mobilenet_v3_small_050` and `efficientnet_b0` presets), a SeparableConv2D net, a Conv1D keyword-spotting
style net and a one-block text transformer), on offline data (mnist5k resized to 32x32
RGB for the image nets, its rows as 28-step sequences for the Conv1D net, sklearn's 8x8
digits as 8-word sentences for the transformer, each row binarised into one of 256
words), one run measures side by side:

- float distillation from a float teacher (`keras_kd.Distiller`), then post-training INT8
  of that student (PTQ, 200 calibration samples), then `quantize_model` + quantization-aware
  distillation from the same float teacher and `to_tflite(..., quantization="int8")`;
- whether the INT8 file is all-int8 (no float op, int8 or integer-token input, int8 output);
- its top-1 agreement with the QAT Keras model on the test split (target >= 99%), beside the
  agreement of the same file run by XNNPACK and by TFLite's builtin kernels (the rounding floor:
  two TFLite kernel sets disagree this often on the same int8 file);
- accuracy: float distilled (Keras), PTQ INT8 file, QAT INT8 file (targets: QAT within 1
  point of float, and not below PTQ);
- the cost of a QAT training step over a float one (same batch, interleaved rounds,
  median; target <= 1.5x), over the user's float model and over the same graph in float
  as `quantize_model` rewrites it (a grouped Conv2D as a DepthwiseConv2D, ...): the
  quantizers' own cost, which the verdict also holds to the target;
- INT8 file size over the float32 file's (target <= 0.3x);
- host latency, ai-edge-litert with 1 thread, INT8 over float32 (interleaved rounds,
  median of per-round p50s; reported).

`--sizes` trains nothing: it gives each network trained-like weights (non-zero biases,
spread batch-norm statistics; all-zero biases would be stored once and flatter the
figures) and sets its QAT ranges on a few batches, then writes the float32 file and the
INT8 file three ways: as the converter wrote it, compacted (repeated arrays stored once,
names cut to one op per scope: the default) and with the intermediate tensor names
dropped (`strip_names=True`); then the INT8 file of `quantize_model(...,
per_channel="depthwise")` (one scale per kernel but for depthwise ones), compacted and
stripped. `--per-channel` sets that choice for a full run (default: True, every
convolution per channel).

`--layers` trains nothing either: on the same calibrated networks it runs `compare_layers`
and reports, per network, the worst drift of a layer run on the INT8 file's own input
tensors (at most 1 int8 step where every Keras layer computes what its TFLite op computes)
beside the drift the file builds up by its output. Full runs record the same summary.

Run from the repository root:

    python benchmarks/qat_networks.py                                # all networks, ~1 h on 2 cores
    python benchmarks/qat_networks.py --networks MobileNetV3Small --epochs 4
    python benchmarks/qat_networks.py --quick                        # smoke run of two small nets
    python benchmarks/qat_networks.py --sizes                        # file sizes only, a few minutes
    python benchmarks/qat_networks.py --layers                       # per-layer fidelity, a few minutes
"""

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)
sys.path.insert(0, os.path.join(_ROOT, "examples"))

import mobilenet_qat as example  # noqa: E402
import numpy as np  # noqa: E402

import keras_kd  # noqa: E402
from keras_kd.backend import keras  # noqa: E402
from keras_kd.benchmark import benchmark_tflite, host_description  # noqa: E402
from keras_kd.export import _compact, evaluate_tflite, to_tflite  # noqa: E402
from keras_kd.quantization import compare_layers, float_layers, quantize_model  # noqa: E402
from keras_kd.quantization.registry import QuantizeRegistry  # noqa: E402
from keras_kd.quantization.rewrites import canonicalize  # noqa: E402

TARGETS = {"agreement": 0.99, "accuracy_drop_points": 1.0, "step_cost": 1.5, "size_ratio": 0.3}
BATCH_SIZE = 64
L = keras.layers


# ---------------------------------------------------------------- data


def _image_data(limit):
    return example.load_rgb_digits(32, limit)


def _sequence_data(limit):
    data = keras_kd.load_dataset("mnist5k", limit=limit)
    return data.x_train[..., 0], data.y_train, data.x_test[..., 0], data.y_test


def _token_data(limit):
    """sklearn's 8x8 digits as 8-word sentences: each row, binarised at half intensity, is one of 256 words."""
    data = keras_kd.load_dataset("digits", normalize=False, flatten=True, limit=limit)

    def as_words(x):
        bits = (np.asarray(x).reshape(len(x), 8, 8) >= 8).astype("int32")
        return (bits * (2 ** np.arange(8))).sum(-1).astype("int32")

    return as_words(data.x_train), data.y_train, as_words(data.x_test), data.y_test


# ---------------------------------------------------------------- models


def _applications(factory, **options):
    def build(shape):
        return factory(input_shape=shape, weights=None, classes=10, classifier_activation=None, **options)

    return build


def _scaled(build, scale, offset):
    """A keras.applications net without preprocessing inside, fed pixels mapped as it expects."""

    def wrapped(shape):
        inputs = keras.Input(shape, name="pixels")
        return keras.Model(inputs, build(shape)(L.Rescaling(scale, offset)(inputs)))

    return wrapped


def _hub_classifier(backbone, shape, scale, offset=0.0):
    """A keras-hub backbone fed pixels mapped as it expects, with a 10-class head on its pooled features."""
    inputs = keras.Input(shape, name="pixels")
    features = L.GlobalAveragePooling2D()(backbone(L.Rescaling(scale, offset)(inputs)))
    return keras.Model(inputs, L.Dense(10)(features))


def _hub_mobilenet(shape):
    from keras_hub.models import MobileNetBackbone

    backbone = MobileNetBackbone(
        stackwise_expansion=[[16], [4, 3], [3, 3, 3]], stackwise_num_blocks=[1, 2, 3],
        stackwise_num_filters=[[16], [24, 24], [40, 40, 48]], stackwise_kernel_size=[[3], [3, 3], [5, 5, 5]],
        stackwise_num_strides=[[2], [2, 1], [2, 1, 1]], stackwise_se_ratio=[[0.25], [None, None], [0.25] * 3],
        stackwise_activation=[["relu"], ["relu", "relu"], ["hard_swish"] * 3],
        stackwise_padding=[[1], [1, 1], [2, 2, 2]], output_num_filters=96, depthwise_filters=16,
        depthwise_stride=2, depthwise_residual=False, last_layer_filter=96, squeeze_and_excite=0.5,
        image_shape=shape,
    )
    return _hub_classifier(backbone, shape, 1 / 127.5, -1.0)


def _hub_efficientnet(shape):
    from keras_hub.models import EfficientNetBackbone

    backbone = EfficientNetBackbone(
        stackwise_width_coefficients=[1.0] * 3, stackwise_depth_coefficients=[1.0] * 3,
        stackwise_kernel_sizes=[3, 3, 5], stackwise_num_repeats=[1, 2, 2], stackwise_input_filters=[16, 16, 24],
        stackwise_output_filters=[16, 24, 40], stackwise_expansion_ratios=[1, 6, 6],
        stackwise_squeeze_and_excite_ratios=[0.25] * 3, stackwise_strides=[1, 2, 2],
        stackwise_block_types=["v1"] * 3, stackwise_force_input_filters=[0] * 3,
        stackwise_nores_option=[False] * 3, input_shape=shape, num_features=128,
    )
    return _hub_classifier(backbone, shape, 1 / 255.0)


def _hub_preset_config(module, architecture):
    """The backbone arguments keras-hub loads for one of its presets, from keras-hub's own timm converter (offline)."""
    import importlib

    try:
        converter = importlib.import_module(f"keras_hub.src.utils.timm.{module}")
    except ImportError as error:  # a keras-hub without the converter: skipped like a missing keras-hub
        raise ImportError(f"keras-hub has no preset config for {architecture} ({error})") from error
    return converter.convert_backbone_config({"architecture": architecture})


def _hub_preset_mobilenet(shape):
    """keras-hub's MobileNetBackbone as its preset `mobilenet_v3_small_050_imagenet` builds it (278,784 weights)."""
    from keras_hub.models import MobileNetBackbone

    backbone = MobileNetBackbone(**_hub_preset_config("convert_mobilenet", "mobilenetv3_small_050"), image_shape=shape)
    return _hub_classifier(backbone, shape, 1 / 127.5, -1.0)


def _hub_preset_efficientnet(shape):
    """keras-hub's EfficientNetBackbone with the B0 arguments its `efficientnet_b0_*` presets are converted with."""
    from keras_hub.models import EfficientNetBackbone

    backbone = EfficientNetBackbone(**_hub_preset_config("convert_efficientnet", "efficientnet_b0"), input_shape=shape)
    return _hub_classifier(backbone, shape, 1 / 255.0)


def _separable_net(shape):
    inputs = keras.Input(shape, name="pixels")
    x = L.Rescaling(1 / 255.0)(inputs)
    for filters, strides in ((32, 1), (64, 2), (96, 2), (128, 2)):
        x = L.SeparableConv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
        x = L.ReLU(6.0)(L.BatchNormalization()(x))
    return keras.Model(inputs, L.Dense(10)(L.GlobalAveragePooling2D()(x)), name="separable_net")


def _keyword_spotting_net(shape, width=32):
    inputs = keras.Input(shape, name="frames")
    x = L.ReLU()(L.BatchNormalization()(L.Conv1D(width, 5, use_bias=False)(inputs)))
    x = L.MaxPooling1D()(x)
    x = L.ReLU()(L.BatchNormalization()(L.Conv1D(width * 2, 3, padding="same", use_bias=False)(x)))
    x = L.AveragePooling1D(2)(x)
    x = L.Conv1D(width * 2, 3, padding="causal", activation="relu")(x)
    return keras.Model(inputs, L.Dense(10)(L.GlobalAveragePooling1D()(x)), name="keyword_spotting_net")


def _text_transformer(shape, width=32, heads=2, blocks=1, vocabulary=256):
    tokens = keras.Input(shape, dtype="int32", name="tokens")
    x = L.Embedding(vocabulary, width)(tokens)
    x = L.Add()([x, L.Embedding(shape[0], width)(keras.ops.arange(shape[0])[None])])
    for _ in range(blocks):
        x = L.LayerNormalization()(L.Add()([x, L.MultiHeadAttention(heads, width // heads)(x, x)]))
        x = L.LayerNormalization()(L.Add()([x, L.Dense(width)(L.Dense(width * 2, activation="gelu")(x))]))
    return keras.Model(tokens, L.Dense(10)(L.GlobalAveragePooling1D()(x)), name="text_transformer")


# name -> (data kind, student builder)
NETWORKS = {
    "MobileNetV2-0.35": ("image", _scaled(_applications(keras.applications.MobileNetV2, alpha=0.35), 1 / 127.5, -1)),
    "MobileNetV3Small": ("image", _applications(keras.applications.MobileNetV3Small, include_preprocessing=True)),
    "MobileNetV3Small-nopre": (
        "image",
        _scaled(_applications(keras.applications.MobileNetV3Small, include_preprocessing=False), 1 / 127.5, -1),
    ),
    "MobileNetV3Large": ("image", _applications(keras.applications.MobileNetV3Large, include_preprocessing=True)),
    "MobileNetV3Large-nopre": (
        "image",
        _scaled(_applications(keras.applications.MobileNetV3Large, include_preprocessing=False), 1 / 127.5, -1),
    ),
    "EfficientNetB0": ("image", _applications(keras.applications.EfficientNetB0)),
    "keras-hub MobileNet": ("image", _hub_mobilenet),
    "keras-hub EfficientNet": ("image", _hub_efficientnet),
    "keras-hub MobileNetV3Small-050": ("image", _hub_preset_mobilenet),
    "keras-hub EfficientNetB0": ("image", _hub_preset_efficientnet),
    "SeparableConv2D net": ("image", _separable_net),
    "Conv1D keyword spotting": ("sequence", _keyword_spotting_net),
    "text transformer": ("tokens", _text_transformer),
}
QUICK = ("SeparableConv2D net", "Conv1D keyword spotting")

_DATA = {"image": _image_data, "sequence": _sequence_data, "tokens": _token_data}
_TEACHERS = {
    "image": lambda shape: example.build_rgb_teacher(shape),
    "sequence": lambda shape: _keyword_spotting_net(shape, width=96),
    "tokens": lambda shape: _text_transformer(shape, width=64, heads=4, blocks=2),
}


# ---------------------------------------------------------------- measuring


def _accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, batch_size=256, verbose=0), axis=-1) == y))


def _fit_teacher(kind, x, y, epochs):
    teacher = example.shorten_batch_norm_memory(_TEACHERS[kind](x.shape[1:]))
    teacher.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(x, y, epochs=epochs, batch_size=BATCH_SIZE, verbose=0)
    return teacher


def _distill(teacher, student, x, y, epochs, learning_rate):
    steps = epochs * -(-len(x) // BATCH_SIZE)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, max(1, steps))
    keras_kd.Distiller(teacher=teacher, student=student).compile(optimizer=keras.optimizers.Adam(schedule)).fit(
        x, y, epochs=epochs, batch_size=BATCH_SIZE, verbose=0
    )


def _step_cost(float_model, qat_model, x, y, rounds):
    """Median over interleaved rounds of the QAT step time over the float step time, one supervised batch.

    Returns `(over the float model, over the same graph in float)`. The second float model is the
    one `quantize_model` places its quantizers on (`canonicalize`: a grouped Conv2D as the
    DepthwiseConv2D TFLite runs, a SeparableConv2D split, ...), so its ratio is what the quantizers
    alone cost. The two differ where the rewrite changes the speed: keras-hub's MobileNet writes its
    depthwise convolutions as `Conv2D(groups=channels)`, whose gradient TensorFlow computes slowly on
    CPU.
    """
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    models = []
    for model in (keras.models.clone_model(float_model), canonicalize(float_model, QuantizeRegistry()), qat_model):
        model.compile(keras.optimizers.SGD(0.0), loss)
        model.train_on_batch(x, y)  # trace
        models.append(model)
    ratios = []
    for _ in range(rounds):
        times = []
        for model in models:
            start = time.perf_counter()
            for _ in range(5):
                model.train_on_batch(x, y)
            times.append(time.perf_counter() - start)
        ratios.append((times[2] / times[0], times[2] / times[1]))
    return tuple(statistics.median(ratio[k] for ratio in ratios) for k in (0, 1))


def _kernel_agreement(path, x):
    """Top-1 agreement of the same file run by XNNPACK and by TFLite's builtin kernels: the rounding floor."""
    xnnpack, builtin = (np.argmax(evaluate_tflite(path, x, use_xnnpack=flag).predictions, axis=-1)
                        for flag in (True, False))
    return float(np.mean(xnnpack == builtin))


def _latency(float_path, int8_path, rounds, runs):
    ratios, p50s = [], {"float32": [], "int8": []}
    for _ in range(rounds):
        f = benchmark_tflite(float_path, num_threads=1, num_runs=runs, warmup_runs=5)
        q = benchmark_tflite(int8_path, num_threads=1, num_runs=runs, warmup_runs=5)
        ratios.append(q.p50_ms / f.p50_ms)
        p50s["float32"].append(f.p50_ms)
        p50s["int8"].append(q.p50_ms)
    return statistics.median(ratios), {k: statistics.median(v) for k, v in p50s.items()}


def measure(name, data, teacher, args, folder):
    kind, build = NETWORKS[name]
    x_train, y_train, x_test, y_test = data
    keras.utils.set_random_seed(args.seed)
    figures = {"network": name}
    started = time.time()
    student = example.shorten_batch_norm_memory(build(x_train.shape[1:]))
    figures["parameters"] = int(student.count_params())
    _distill(teacher, student, x_train, y_train, args.epochs, 2e-3)
    figures["float_accuracy"] = _accuracy(student, x_test, y_test)

    float_path = os.path.join(folder, "float32.tflite")
    to_tflite(student, float_path, quantization=None)
    ptq_path = os.path.join(folder, "ptq.tflite")
    ptq = to_tflite(student, ptq_path, representative_data=x_train[:200], allow_float_fallback=True)
    figures["ptq_accuracy"] = evaluate_tflite(ptq_path, x_test, y_test).accuracy
    figures["ptq_float_ops"] = ptq.float_ops

    qat = quantize_model(student, per_channel=args.per_channel)
    figures["float_layers"] = [layer for layer, _ in float_layers(qat)]
    figures["step_cost"], figures["step_cost_same_graph"] = _step_cost(
        student, qat, x_train[:BATCH_SIZE], y_train[:BATCH_SIZE], args.rounds
    )
    _distill(teacher, qat, x_train, y_train, args.qat_epochs, 1e-4)
    figures["qat_keras_accuracy"] = _accuracy(qat, x_test, y_test)
    int8_path = os.path.join(folder, "int8.tflite")
    report = to_tflite(qat, int8_path, validation_data=(x_test, y_test), min_agreement=0.0)
    figures.update(
        float_ops=report.float_ops,
        input_dtype=report.input_dtype,
        output_dtype=report.output_dtype,
        agreement=report.validation.agreement,
        kernel_agreement=_kernel_agreement(int8_path, x_test),
        int8_accuracy=report.validation.tflite_accuracy,
        size_ratio=report.size_bytes / os.path.getsize(float_path),
        int8_kb=report.size_bytes / 1024,
        stripped_size_ratio=_stripped_size(int8_path) / os.path.getsize(float_path),
        local_drift=_local_drift(qat, int8_path, x_test[:32]),
    )
    figures["latency_ratio"], figures["p50_ms"] = _latency(float_path, int8_path, args.rounds, args.runs)
    figures["seconds"] = time.time() - started
    return figures


def _stripped_size(int8_path):
    """Bytes of the written INT8 file with its intermediate tensor names dropped, as `strip_names=True` writes it."""
    with open(int8_path, "rb") as handle:
        return len(_compact.repack(handle.read(), strip_names=True))


def _trained_like(model, seed=0):
    """Non-zero biases and spread batch-norm statistics, as after training, on a model that was never trained."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        leaf = weight.path.rsplit("/", 1)[-1]
        if leaf in ("bias", "beta", "moving_mean"):
            weight.assign(rng.normal(0.0, 0.1, weight.shape).astype(weight.dtype))
        elif leaf in ("gamma", "moving_variance"):
            weight.assign(rng.uniform(0.5, 1.5, weight.shape).astype(weight.dtype))


def _calibrated(name, data):
    """The network with trained-like weights and its QAT copy, ranges set on 256 real inputs; and those inputs."""
    kind, build = NETWORKS[name]
    x = data[0][:256]
    student = build(x.shape[1:])
    _trained_like(student)
    qat = quantize_model(student)
    for start in range(0, len(x), BATCH_SIZE):
        qat(x[start : start + BATCH_SIZE], training=True)  # moving-average ranges from real inputs
    return student, qat, x


def _local_drift(qat, path, x):
    """compare_layers' summary: how far each layer, run on the file's own inputs, is from the file's output."""
    rows = compare_layers(qat, path, x)
    checked = [row for row in rows if row.local_max_steps is not None]
    worst = max(checked, key=lambda row: (row.local_max_steps, row.local_off), default=None)
    return {
        "layers": len(rows),
        "checked": len(checked),
        "local_max_steps": None if worst is None else worst.local_max_steps,
        "worst_layer": None if worst is None else f"{worst.name} ({worst.class_name})",
        "local_off_max": max((row.local_off for row in checked), default=None),
        "over_one_step": [f"{row.name} ({row.class_name}): {row.local_max_steps:.1f}" for row in checked
                          if row.local_max_steps > 1.01],
        "output_drift_steps": rows[-1].max_steps if rows else None,
    }


def measure_layers(name, data, folder):
    """Per-layer fidelity without training: every quantized layer run on the INT8 file's own input tensors."""
    student, qat, x = _calibrated(name, data)
    path = os.path.join(folder, "int8.tflite")
    to_tflite(qat, path)
    return {"network": name, "parameters": int(student.count_params()), **_local_drift(qat, path, x[:32])}


def requantized(student, qat, per_channel):
    """`quantize_model(student, per_channel=...)` with `qat`'s weights and ranges: only the kernels' scales differ."""
    copy = quantize_model(student, per_channel=per_channel)
    copy.set_weights(qat.get_weights())
    return copy


def measure_sizes(name, data, folder):
    """Bytes of the float32 file and of the INT8 file as converted, compacted, and with names stripped."""
    student, qat, x = _calibrated(name, data)
    sizes = {"network": name, "parameters": int(student.count_params())}
    float_path = os.path.join(folder, "float32.tflite")
    sizes["float32"] = to_tflite(student, float_path, quantization=None).size_bytes
    converted_path = os.path.join(folder, "converted.tflite")
    sizes["converted"] = to_tflite(qat, converted_path, compact=False).size_bytes
    with open(converted_path, "rb") as handle:  # one conversion; the two repacks are to_tflite's own
        converted = handle.read()
    sizes["compact"] = len(_compact.compact(converted))
    sizes["stripped"] = len(_compact.repack(converted, strip_names=True))
    one_scale = requantized(student, qat, per_channel="depthwise")
    one_scale_path = os.path.join(folder, "depthwise.tflite")
    sizes["depthwise_compact"] = to_tflite(one_scale, one_scale_path).size_bytes
    with open(one_scale_path, "rb") as handle:
        sizes["depthwise_stripped"] = len(_compact.repack(handle.read(), strip_names=True))
    return sizes


def _print_sizes(rows, header):
    print(header)
    print("| network | params | float32 | INT8 as converted | compacted (default) | names stripped "
          "| per_channel=\"depthwise\", compacted | and names stripped |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        if "error" in row:
            print(f"| {row['network']} | | error: {row['error']} | | | | | |")
            continue
        ratio = lambda key: row[key] / row["float32"]  # noqa: E731
        mark = lambda key: "" if ratio(key) <= TARGETS["size_ratio"] else " MISS"  # noqa: E731
        print(
            f"| {row['network']} | {row['parameters'] / 1e3:.0f} K | {row['float32'] / 1e3:,.0f} KB "
            + " ".join(f"| {ratio(key):.3f}x{mark(key)}"
                       for key in ("converted", "compact", "stripped", "depthwise_compact", "depthwise_stripped"))
            + " |"
        )


def _print_layers(rows, header):
    print(header)
    print("| network | params | quantized layers in the file | run on the file's inputs | worst layer, steps "
          "| values off by one, at most | layers over 1 step | drift at the output, steps |")
    print("|---|---:|---:|---:|---|---:|---|---:|")
    for row in rows:
        if "error" in row:
            print(f"| {row['network']} | | error: {row['error']} | | | | | |")
            continue
        print(
            f"| {row['network']} | {row['parameters'] / 1e3:.0f} K | {row['layers']} | {row['checked']} "
            f"| {row['local_max_steps']:.2f} ({row['worst_layer']}) | {row['local_off_max']:.2%} "
            f"| {', '.join(row['over_one_step']) or 'none'} | {row['output_drift_steps']:.0f} |"
        )


def _verdicts(row):
    all_int8 = not row["float_ops"] and row["input_dtype"] in ("int8", "int32") and row["output_dtype"] == "int8"
    drop = (row["float_accuracy"] - row["int8_accuracy"]) * 100
    return {
        "all_int8": all_int8,
        "agreement": row["agreement"] >= TARGETS["agreement"],
        "accuracy": drop <= TARGETS["accuracy_drop_points"] and row["int8_accuracy"] >= row["ptq_accuracy"],
        # the stricter of the two: the quantizers' own cost shows even where the user's float graph is slow
        "step_cost": max(row["step_cost"], row.get("step_cost_same_graph", 0.0)) <= TARGETS["step_cost"],
        "size": row["size_ratio"] <= TARGETS["size_ratio"],
    }


def _print(rows, header):
    print(header)
    print(
        "| network | params | all int8 | agreement | kernels agree | float | PTQ INT8 | QAT INT8 | QAT step | size "
        "| latency (int8/float, 1 thread) |"
    )
    print("|---|---:|:-:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        if "error" in row:
            print(f"| {row['network']} | | error: {row['error']} | | | | | | | | |")
            continue
        verdict = _verdicts(row)
        mark = lambda ok: "" if ok else " MISS"  # noqa: E731
        print(
            f"| {row['network']} | {row['parameters'] / 1e3:.0f} K | {'yes' if verdict['all_int8'] else 'NO'} "
            f"| {row['agreement']:.2%}{mark(verdict['agreement'])} | {row['kernel_agreement']:.2%} "
            f"| {row['float_accuracy']:.2%} "
            f"| {row['ptq_accuracy']:.2%} | {row['int8_accuracy']:.2%}{mark(verdict['accuracy'])} "
            f"| {row['step_cost']:.2f}x{_same_graph_note(row)}{mark(verdict['step_cost'])} "
            f"| {row['size_ratio']:.2f}x{mark(verdict['size'])}"
            f"{_stripped_note(row)} "
            f"| {row['latency_ratio']:.2f}x ({row['p50_ms']['int8']:.3f} / {row['p50_ms']['float32']:.3f} ms) |"
        )


def _same_graph_note(row):
    same = row.get("step_cost_same_graph")
    return "" if same is None or abs(same - row["step_cost"]) < 0.05 else f" ({same:.2f}x same graph)"


def _stripped_note(row):
    return f" ({row['stripped_size_ratio']:.2f}x stripped)" if "stripped_size_ratio" in row else ""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default=None, help=f"comma-separated subset of: {', '.join(NETWORKS)}")
    parser.add_argument("--limit", type=int, default=None, help="samples per split (default: all)")
    parser.add_argument("--teacher-epochs", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=8, help="float distillation epochs")
    parser.add_argument("--qat-epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--runs", type=int, default=50, help="interpreter runs per latency round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="two small networks, tiny data and schedule")
    parser.add_argument("--sizes", action="store_true", help="file sizes only: no training, a few minutes")
    parser.add_argument("--layers", action="store_true",
                        help="per-layer fidelity only: no training; each quantized layer run on the file's own inputs")
    parser.add_argument("--per-channel", default="true", choices=("true", "depthwise", "false"),
                        help="quantize_model's per_channel for the full run (default: true)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    args.per_channel = {"true": True, "false": False}.get(args.per_channel, args.per_channel)
    if args.quick:
        args.networks = args.networks or ",".join(QUICK)
        args.limit, args.teacher_epochs, args.epochs, args.qat_epochs = 300, 1, 1, 1
        args.rounds, args.runs = 1, 10
    names = list(NETWORKS) if args.networks is None else [n.strip() for n in args.networks.split(",")]
    unknown = [n for n in names if n not in NETWORKS]
    if unknown:
        parser.error(f"unknown network(s) {unknown}; choose from {list(NETWORKS)}")
    args.names = names
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.sizes or args.layers:
        return main_untrained(args)
    rows, teachers, datasets = [], {}, {}
    for name in args.names:
        kind = NETWORKS[name][0]
        if kind not in datasets:
            datasets[kind] = _DATA[kind](args.limit)
            keras.utils.set_random_seed(args.seed)
            teachers[kind] = _fit_teacher(kind, datasets[kind][0], datasets[kind][1], args.teacher_epochs)
        with tempfile.TemporaryDirectory() as folder:
            try:
                row = measure(name, datasets[kind], teachers[kind], args, folder)
            except ImportError as error:  # keras-hub is optional
                row = {"network": name, "error": f"skipped ({error})"}
            except (ValueError, RuntimeError) as error:  # a network that fails is a result too
                row = {"network": name, "error": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"}
        row["teacher_accuracy"] = _accuracy(teachers[kind], datasets[kind][2], datasets[kind][3])
        rows.append(row)
        print(json.dumps(row, default=str), flush=True)
    header = (
        f"{datetime.date.today().isoformat()}, {host_description()}; "
        f"epochs {args.epochs} float + {args.qat_epochs} QAT, teacher {args.teacher_epochs}, limit {args.limit}, "
        f"per_channel {args.per_channel}"
    )
    _print(rows, header)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"header": header, "rows": rows, "targets": TARGETS}, handle, indent=2, default=str)
    return 0


def main_untrained(args):
    """`--sizes` and `--layers`: trained-like weights and calibrated ranges, no training."""
    measure, printer, what = (
        (measure_sizes, _print_sizes, "file sizes over the float32 file") if args.sizes else
        (measure_layers, _print_layers, "each quantized layer on the INT8 file's own inputs (32 samples)")
    )
    rows, datasets = [], {}
    for name in args.names:
        kind = NETWORKS[name][0]
        if kind not in datasets:
            datasets[kind] = _DATA[kind](args.limit)
        keras.utils.set_random_seed(args.seed)
        with tempfile.TemporaryDirectory() as folder:
            try:
                row = measure(name, datasets[kind], folder)
            except ImportError as error:  # keras-hub is optional
                row = {"network": name, "error": f"skipped ({error})"}
        rows.append(row)
        print(json.dumps(row), flush=True)
    header = f"{datetime.date.today().isoformat()}, {host_description()}; {what}"
    printer(rows, header)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"header": header, "rows": rows, "targets": TARGETS}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
