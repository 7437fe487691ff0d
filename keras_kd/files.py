"""Writing files so that an interrupted write never leaves a half-written file under the final name."""

import os
import tempfile

__all__ = ["atomic_write"]


def atomic_write(path, write):
    """Calls `write(temporary_path)` for a temp file beside `path`, then renames it to `path`.

    The temp file keeps `path`'s extension (Keras' `model.save` checks it). On
    any error, including KeyboardInterrupt, the temp file is removed and an
    existing file at `path` is left as it was.

    Example:

    ```python
    atomic_write("report.json", lambda temporary: open(temporary, "w").write("{}"))
    ```
    """
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp" + os.path.splitext(name)[1], dir=folder)
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
