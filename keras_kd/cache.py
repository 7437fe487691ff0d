"""Offline distillation: run the teacher once and train on its stored outputs.

The teacher's forward pass dominates the cost of a distillation step (about
4x a student-only step on the benchmark models). When the inputs are the same
every epoch, its outputs can be computed once. `cache_teacher_outputs` returns
a `tf.data.Dataset` of `(x, {"teacher_outputs": ..., "labels": y})` that
`Distiller.fit` recognises: the teacher is then not called at all.

Do not use a cache with random data augmentation applied after caching: the
stored targets belong to the un-augmented inputs, so the student would learn
the teacher's answer for a different image. Augment before caching (a fixed,
enlarged dataset) or distil online.
"""

import json
import os
import shutil
import tempfile

import numpy as np

from keras_kd.backend import keras, tf
from keras_kd.teacher import TeacherRunner

__all__ = ["cache_teacher_outputs", "CACHE_METADATA_FILE"]

CACHE_METADATA_FILE = "keras_kd_cache.json"


def _teacher_runner(teacher):
    """The `TeacherRunner` for a teacher model, or a Distiller's own (its taps and teacher dtype)."""
    from keras_kd.distiller import Distiller

    if isinstance(teacher, Distiller):
        if teacher.augment is not None or teacher.mixing is not None:
            raise ValueError(
                f"This Distiller has augment={teacher.augment!r} and mixing={teacher.mixing!r}: its teacher must "
                "label each step's new view, so its outputs cannot be cached once. Train the Distiller on the raw "
                "data instead, or cache with a Distiller built without augment=/mixing=."
            )
        runner = teacher.teacher_runner
    elif isinstance(teacher, keras.Model):
        runner = TeacherRunner(teacher)
    else:
        raise TypeError(f"teacher must be a keras.Model or a keras_kd.Distiller, got {type(teacher).__name__}.")
    runner.check_built()
    return runner


def _input_dataset(x, y, batch_size):
    if isinstance(x, tf.data.Dataset):
        if y is not None:
            raise ValueError("When x is a tf.data.Dataset, put the labels in it as (x, y) batches; y must be None.")
        return x
    x = np.asarray(x)
    if len(x) == 0:
        raise ValueError("x is empty: there is nothing for the teacher to label.")
    if y is not None:
        y = np.asarray(y)
        if len(y) != len(x):
            raise ValueError(f"x has {len(x)} samples but y has {len(y)}; they must match.")
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    return tf.data.Dataset.from_tensor_slices(x).batch(batch_size)


def _split(element):
    if isinstance(element, tuple):
        return element[0], (element[1] if len(element) > 1 else None)
    return element, None


def _labelled(dataset, run):
    @tf.function
    def label(*element):
        x, y = _split(element if len(element) > 1 else element[0])
        target = {"teacher_outputs": run(x)}
        if y is not None:
            target["labels"] = y
        return x, target

    return dataset.map(label)


def _in_memory(stacked, batch_size, shuffle, seed, num_samples):
    """Batches of `stacked` (whole-dataset tensors): each epoch shuffles the example indices, and one gather per
    batch takes the examples, instead of shuffling and batching the examples one by one."""
    indices = tf.data.Dataset.range(num_samples)
    if shuffle:
        indices = indices.shuffle(num_samples, seed=seed, reshuffle_each_iteration=True)

    def take(batch):
        return tf.nest.map_structure(lambda t: tf.gather(t, batch), stacked)

    return indices.batch(batch_size).map(take).prefetch(tf.data.AUTOTUNE)


def _finish(dataset, batch_size, shuffle, seed, num_samples):
    if shuffle:
        dataset = dataset.shuffle(min(num_samples, 50_000) if num_samples else 10_000, seed=seed,
                                  reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def cache_teacher_outputs(teacher, x, y=None, batch_size=32, path=None, shuffle=True, seed=0, overwrite=False):
    """Runs the teacher once over `x` and returns a dataset that `Distiller.fit` trains on.

    Args:
        teacher: the teacher `keras.Model`, or a `keras_kd.Distiller` (then its
            feature taps and `teacher_dtype` are used, so feature losses work
            from the cache too).
        x: inputs as a NumPy array, or a `tf.data.Dataset` of `x` or `(x, y)`
            batches (for data larger than memory, with `path`).
        y: labels for NumPy `x` (optional: without labels only the
            distillation term trains).
        batch_size: batch size of the returned dataset (and of the teacher run).
        path: None keeps the outputs in memory. A folder stores them on disk
            with `tf.data.Dataset.save` (streamed batch by batch, so the data
            may be larger than RAM); an existing complete cache at `path` is
            reused without running the teacher unless `overwrite=True`.
        shuffle: reshuffle the cached examples each epoch.
        seed: shuffle seed.
        overwrite: recompute an existing cache at `path`.

    Returns:
        A batched `tf.data.Dataset` of `(x, {"teacher_outputs": {...}, "labels": y})`.

    Not valid with random augmentation applied to `x` after caching (see the
    module docstring).

    Example:

    ```python
    train = keras_kd.cache_teacher_outputs(teacher, x_train, y_train, batch_size=64)
    distiller.fit(train, epochs=10)  # the teacher is not called again
    ```
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    run = _teacher_runner(teacher)
    teacher_name = run.teacher.name
    if path is None:
        source = _input_dataset(x, y, batch_size)
        examples = []
        for element in _labelled(source, run):
            examples.append(element)
        if not examples:
            raise ValueError("The input dataset is empty: there is nothing for the teacher to label.")
        stacked = tf.nest.map_structure(lambda *parts: tf.concat(parts, axis=0), *examples)
        num_samples = int(tf.nest.flatten(stacked[0])[0].shape[0])
        return _in_memory(stacked, batch_size, shuffle, seed, num_samples)

    path = os.fspath(path)
    metadata_path = os.path.join(path, CACHE_METADATA_FILE)
    if os.path.exists(path) and not overwrite:
        if not os.path.isfile(metadata_path):
            raise FileExistsError(
                f"{path!r} exists but is not a complete keras_kd teacher cache (no {CACHE_METADATA_FILE}). "
                "Choose an empty path, or pass overwrite=True to replace it."
            )
        with open(metadata_path) as handle:
            metadata = json.load(handle)
        dataset = tf.data.Dataset.load(path)
        return _finish(dataset, batch_size, shuffle, seed, metadata.get("num_samples"))
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"The folder {parent!r} for the cache does not exist; create it first.")
    # Written beside the final path and renamed at the end: an interrupted run never leaves a cache
    # that looks complete.
    staging = tempfile.mkdtemp(prefix=".keras_kd_cache_", dir=parent)
    try:
        labelled = _labelled(_input_dataset(x, y, batch_size), run).unbatch()
        labelled.save(staging)
        num_samples = int(tf.data.Dataset.load(staging).reduce(0, lambda count, _: count + 1).numpy())
        if num_samples == 0:
            raise ValueError("The input dataset is empty: there is nothing for the teacher to label.")
        with open(os.path.join(staging, CACHE_METADATA_FILE), "w") as handle:
            json.dump({"num_samples": num_samples, "teacher": teacher_name, "format": 1}, handle)
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return _finish(tf.data.Dataset.load(path), batch_size, shuffle, seed, num_samples)
