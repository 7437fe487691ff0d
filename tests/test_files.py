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


@pytest.fixture
def umask():
    """Sets the process umask for one test and restores it."""
    previous = os.umask(0o022)
    yield lambda value: os.umask(value)
    os.umask(previous)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_get_the_permissions_the_umask_gives(tmp_path, umask, mask, expected):
    umask(mask)
    path = tmp_path / "report.json"
    atomic_write(str(path), _write_text("{}"))
    assert oct(path.stat().st_mode & 0o777) == oct(expected)


def test_a_replaced_0600_file_gets_the_umask_permissions(tmp_path, umask):
    # earlier versions wrote every file 0600; rewriting one must not carry that on
    umask(0o022)
    path = tmp_path / "student.keras"
    path.write_text("old")
    os.chmod(path, 0o600)
    atomic_write(str(path), _write_text("new"))
    assert oct(path.stat().st_mode & 0o777) == oct(0o644) and path.read_text() == "new"


def test_a_writer_that_recreates_the_file_still_gets_the_umask_permissions(tmp_path, umask):
    umask(0o022)

    def recreate(temporary):
        os.remove(temporary)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)

    atomic_write(str(tmp_path / "plot.png"), recreate)
    assert oct((tmp_path / "plot.png").stat().st_mode & 0o777) == oct(0o644)


def _dead_pid():
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_temporaries_of_a_killed_write_are_removed_by_the_next_write(tmp_path):
    stale = tmp_path / f".model.tflite.{_dead_pid()}.k3x9q2ab.tmp.tflite"
    stale.write_bytes(b"x" * 1000)
    live = tmp_path / f".model.tflite.{os.getppid()}.a1b2c3d4.tmp.tflite"  # a live process: left alone
    live.write_bytes(b"y")
    other = tmp_path / ".notes.txt.12345.abcdefgh.tmp"  # a temporary of another file: left alone
    other.write_bytes(b"z")
    atomic_write(str(tmp_path / "model.tflite"), _write_text("file"))
    assert sorted(os.listdir(tmp_path)) == sorted(["model.tflite", live.name, other.name])


def test_old_style_temporaries_are_removed_only_when_old(tmp_path):
    from keras_kd.files import remove_stale_temporaries

    old = tmp_path / ".history.json.abcd1234.tmp.json"
    old.write_text("{")
    recent = tmp_path / ".history.json.wxyz9876.tmp.json"
    recent.write_text("{")
    os.utime(old, (0, 0))
    assert remove_stale_temporaries(str(tmp_path / "history.json")) == [str(old)]
    assert recent.exists()


def test_check_writable_folder_names_the_folder(tmp_path, monkeypatch):
    import tempfile

    from keras_kd import files

    assert files.check_writable_folder(str(tmp_path / "a.tflite")) == str(tmp_path / "a.tflite")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        files.check_writable_folder(str(tmp_path / "missing" / "a.tflite"))

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError, match=r"no file can be created in .*Choose a writable folder"):
        files.check_writable_folder(str(tmp_path / "a.tflite"))
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_check_writable_folder_on_a_read_only_folder(tmp_path):
    from keras_kd.files import check_writable_folder

    folder = tmp_path / "ro"
    folder.mkdir()
    os.chmod(folder, 0o555)
    try:
        with pytest.raises(PermissionError, match="no file can be created"):
            check_writable_folder(str(folder / "a.tflite"))
    finally:
        os.chmod(folder, 0o755)


def test_temp_file_keeps_the_keras_weights_extension(tmp_path):
    seen = []
    atomic_write(str(tmp_path / "epoch_3.weights.h5"), seen.append)
    assert seen[0].endswith(".weights.h5")


def test_scratch_folders_of_dead_processes_are_removed(tmp_path, monkeypatch):
    import tempfile

    from keras_kd.files import make_temporary_folder

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stale = tmp_path / f"keras_kd_export_{_dead_pid()}_x1y2z3"
    (stale / "variables").mkdir(parents=True)
    live = tmp_path / f"keras_kd_export_{os.getppid()}_a1b2c3"
    live.mkdir()
    folder = make_temporary_folder("keras_kd_export_")
    assert os.path.basename(folder).startswith(f"keras_kd_export_{os.getpid()}_")
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, os.path.basename(folder)])
