"""atomic_write: the final name only ever holds a complete file."""

import os

import pytest

from keras_kd.files import atomic_write

pytestmark = pytest.mark.legacy_keras


def _write_text(text):
    def write(temporary):
        with open(temporary, "w") as handle:
            handle.write(text)

    return write


def test_writes_and_replaces(tmp_path):
    path = tmp_path / "model.keras"
    atomic_write(str(path), _write_text("one"))
    atomic_write(str(path), _write_text("two"))
    assert path.read_text() == "two"
    assert os.listdir(tmp_path) == ["model.keras"]


def test_temp_file_keeps_the_extension(tmp_path):
    seen = []
    atomic_write(str(tmp_path / "student.keras"), seen.append)
    assert seen[0].endswith(".keras") and os.path.dirname(seen[0]) == str(tmp_path)


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path, error):
    path = tmp_path / "history.json"
    path.write_text("old")

    def fail(temporary):
        with open(temporary, "w") as handle:
            handle.write("half")
        raise error

    with pytest.raises(type(error)):
        atomic_write(str(path), fail)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["history.json"]
