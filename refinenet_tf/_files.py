"""Atomic file writes: a temporary file in the target's folder, renamed over the target when complete.

An interrupted write never leaves a partial file under the target name, and the result gets the usual
permissions (``0o666`` minus the umask), not ``mkstemp``'s private ``0o600``.
"""

import contextlib
import json
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


def remove_stale_temporaries(folder):
    """Removes the ``.tmp-*`` files that :func:`atomic_path` left in ``folder`` when its process was killed
    mid-write; returns their paths. Call it only on a folder no other process is writing to."""
    stale = [os.path.join(folder, name) for name in os.listdir(folder) if name.startswith(".tmp-")]
    for path in stale:
        os.remove(path)
    return stale


def writable_folder(path, argument):
    """Creates ``path`` if needed and checks, by writing a small probe file, that files can be written there.

    Raises ``OSError`` naming ``argument`` and the folder, before any real work starts (a permission check
    alone says nothing for root or on a full disk).
    """
    path = os.fspath(path)
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-") as probe:
            probe.write(b"0" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        raise OSError(f"{argument} {path!r} is not a writable folder ({error.strerror or error}); choose another "
                      "folder or free space.") from None
    return path


# Magic numbers of the formats refinenet_tf reads weights from, and of Python pickles, which it never reads.
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"


def check_weights_file(path, argument):
    """Refuses a weights file that is a Python pickle (a PyTorch ``.pth``/``.pt``/``.pkl``, ``joblib``, a pickled
    NumPy object array) before anything reads it: loading a pickle can run arbitrary code.

    Accepted: HDF5 (Keras ``.h5`` / ``.weights.h5``), ``.keras`` archives without pickles, TensorFlow checkpoints
    (a prefix with an ``.index`` file). Anything else gets a ``ValueError`` naming ``argument``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path) and os.path.isfile(path + ".index"):
        return path  # a TensorFlow checkpoint prefix
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{argument} {path!r} does not exist; give a Keras .weights.h5 / .h5 file.")
    with open(path, "rb") as stream:
        head = stream.read(8)
    if head.startswith(_HDF5_MAGIC):
        return path
    if head.startswith(_ZIP_MAGIC):
        import zipfile

        with zipfile.ZipFile(path) as archive:
            pickles = [name for name in archive.namelist() if name.endswith((".pkl", ".pickle")) or
                       name.endswith("/data.pkl")]
        if not pickles:
            return path
        raise ValueError(f"{argument} {path!r} is a PyTorch/pickle archive ({pickles[0]}); refinenet_tf never "
                         "unpickles files (that can run code): convert the weights to a Keras .weights.h5 file.")
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise ValueError(f"{argument} {path!r} is a Python pickle; refinenet_tf never unpickles files (that can run "
                         "code): convert the weights to a Keras .weights.h5 file.")
    if head.startswith(b"\x93NUMPY"):
        raise ValueError(f"{argument} {path!r} is a NumPy array file, not Keras weights: give a Keras .weights.h5 "
                         "file.")
    raise ValueError(f"{argument} {path!r} is not a Keras weights file (HDF5) or TensorFlow checkpoint; give a "
                     ".weights.h5 file saved by model.save_weights.")


def write_json_atomically(path, payload):
    """Writes ``payload`` as indented JSON (keys sorted, other objects as text) to ``path`` atomically."""
    with atomic_path(path, suffix=".json") as temporary, open(temporary, "w") as stream:
        json.dump(payload, stream, indent=2, sort_keys=True, default=str)
