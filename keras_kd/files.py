"""Writing files so that an interrupted write never leaves a half-written file under the final name.

Temporary files are named `.<name>.<pid>.<random>.tmp<ext>` beside the final
file. A process killed with SIGKILL cannot remove its own temporary file, so
the next write to the same name removes the temporaries whose process is gone.
"""

import contextlib
import os
import re
import shutil
import tempfile
import time

__all__ = ["atomic_write", "make_temporary", "make_temporary_folder", "check_writable_folder",
           "remove_stale_temporaries"]

# Temporaries of keras_kd versions that did not put the pid in the name are removed when older than this.
_LEGACY_TEMPORARY_AGE_S = 3600.0


def _umask():
    """The process umask, read without changing it where /proc allows (os.umask sets it as it reads it)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    current = os.umask(0o022)
    os.umask(current)
    return current


def _final_mode():
    """The permission bits of a new file under the user's umask (0644 under the usual 022)."""
    return 0o666 & ~_umask()


# multi-part extensions that writers check for in full (Keras' save_weights wants ".weights.h5")
_COMPOUND_EXTENSIONS = (".weights.h5", ".weights.json")


def _extension(name):
    for extension in _COMPOUND_EXTENSIONS:
        if name.endswith(extension) and name != extension:
            return extension
    return os.path.splitext(name)[1]


def _temporary_pattern(name, extension):
    # group 1: the pid of the writer (absent in the names older versions used)
    return re.compile(
        re.escape(f".{name}.") + r"(?:(\d+)\.)?[A-Za-z0-9_]{6,}" + re.escape(".tmp") + r"(?:" + re.escape(extension)
        + r")?$"
    )


def _process_alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def remove_stale_temporaries(path):
    """Removes the temporary files that an interrupted write to `path` left beside it.

    A temporary belongs to a write of `path` when its name is
    `.<name>.<pid>.<random>.tmp[<ext>]`; it is stale when process `pid` no
    longer exists (killed before it could clean up). Temporaries without a pid
    (written by older keras_kd versions) are removed when older than an hour.
    Other files are never touched.

    Returns:
        The paths removed.

    Example:

    ```python
    remove_stale_temporaries("runs/a/student_int8.tflite")  # [] when nothing was left behind
    ```
    """
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    pattern = _temporary_pattern(name, _extension(name))
    removed = []
    try:
        entries = os.listdir(folder)
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        match = pattern.match(entry)
        if match is None:
            continue
        candidate = os.path.join(folder, entry)
        if match.group(1) is not None:
            stale = not _process_alive(int(match.group(1)))
        else:
            try:
                stale = now - os.path.getmtime(candidate) > _LEGACY_TEMPORARY_AGE_S
            except OSError:
                stale = False
        if stale:
            with contextlib.suppress(OSError):
                os.remove(candidate)
                removed.append(candidate)
    return removed


def make_temporary(path):
    """Creates an empty temporary file beside `path` with the umask's permissions; returns its path.

    The caller writes it and renames it to `path` (or removes it). Stale
    temporaries of earlier, killed writes to `path` are removed first.
    """
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    remove_stale_temporaries(path)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{name}.{os.getpid()}.", suffix=".tmp" + _extension(name), dir=folder
    )
    os.close(handle)
    # mkstemp creates the file 0600 whatever the umask; the final file gets the user's usual permissions
    os.chmod(temporary, _final_mode())
    return temporary


def make_temporary_folder(prefix):
    """Creates a folder `<tmp>/<prefix><pid>_<random>`; first removes those of `prefix` whose process is gone.

    For scratch folders (an exported SavedModel) that a process killed with
    SIGKILL cannot remove: the next process that makes one removes them.
    """
    parent = tempfile.gettempdir()
    pattern = re.compile(re.escape(prefix) + r"(\d+)_[A-Za-z0-9_]+$")
    with contextlib.suppress(OSError):
        for entry in os.listdir(parent):
            match = pattern.match(entry)
            if match is not None and not _process_alive(int(match.group(1))):
                shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}_", dir=parent)


def atomic_write(path, write):
    """Calls `write(temporary_path)` for a temp file beside `path`, then renames it to `path`.

    The temp file keeps `path`'s extension (Keras' `model.save` checks it;
    `.weights.h5` is kept whole for `save_weights`). On
    any error, including KeyboardInterrupt, the temp file is removed and an
    existing file at `path` is left as it was. The file gets the permissions
    the umask gives a new file (0644 under the usual umask 022), not
    `mkstemp`'s 0600, also when it replaces a file. Temporaries left by writes
    that were killed are removed (see `remove_stale_temporaries`). A `write`
    that checks the file and rejects it can move the temporary elsewhere (to
    keep it for inspection) before raising; it is then left where it was moved.

    Example:

    ```python
    atomic_write("report.json", lambda temporary: open(temporary, "w").write("{}"))
    ```
    """
    mode = _final_mode()
    temporary = make_temporary(path)
    try:
        write(temporary)
        # a writer may have deleted and recreated the file (with other permissions)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def check_writable_folder(path, what="the output path"):
    """Raises an error naming the folder when a file cannot be created beside `path`; returns the absolute path.

    Checked by creating (and removing) an empty temporary file there, so a
    read-only folder or file system is found before any long work.

    Raises:
        FileNotFoundError: the folder does not exist.
        IsADirectoryError: `path` is a folder.
        PermissionError: no file can be created in the folder.
    """
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"The folder {folder!r} of {what} {path!r} does not exist. "
            "Create it first (os.makedirs(folder, exist_ok=True)) or choose another path."
        )
    if os.path.isdir(path):
        raise IsADirectoryError(f"{what[0].upper() + what[1:]} {path!r} is a folder; pass a file path.")
    try:
        handle, probe = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.{os.getpid()}.", suffix=".tmp",
                                         dir=folder)
    except OSError as error:
        raise PermissionError(
            f"Cannot write {what} {path!r}: no file can be created in {folder!r} ({error.strerror or error}). "
            "Choose a writable folder, or fix its permissions (or a read-only file system) first."
        ) from None
    os.close(handle)
    with contextlib.suppress(OSError):
        os.remove(probe)
    return path
