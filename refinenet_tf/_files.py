"""Atomic file writes: a temporary file in the target's folder, renamed over the target when complete.

An interrupted write never leaves a partial file under the target name, and the result gets the usual
permissions (``0o666`` minus the umask), not ``mkstemp``'s private ``0o600``.
"""

import contextlib
import os
import tempfile


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yields a temporary path to write; on success it replaces ``path``, on failure it is removed."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Cannot write {path!r}: folder {folder!r} does not exist; create it first.")
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    os.close(handle)
    try:
        yield temporary
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
