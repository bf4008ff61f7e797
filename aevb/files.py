"""Atomic writes: a reader sees the old file or the new one, never half of one; and an exclusive
lock on a file, for the writers that must take turns (`exclusive_lock`).

Each file is written under a temporary name in its folder, flushed to disk, then renamed over the
target. The temporary file is created with mode 0666 less the umask, like any file the user makes
(tempfile.mkstemp would leave it 0600, unreadable to a colleague or a web server).
"""
import fcntl
import os
import secrets
from contextlib import contextmanager
from pathlib import Path


def atomic_write(path, write):
    """Write `path` by calling write(binary_file) on a temporary file, then renaming it into
    place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path, text):
    return atomic_write(path, lambda f: f.write(text.encode()))


def atomic_save(obj, path):
    """torch.save(obj) to path, atomically."""
    import torch
    return atomic_write(path, lambda f: torch.save(obj, f))


@contextmanager
def exclusive_lock(path, busy=None):
    """Hold an exclusive lock (flock) on the file `path` for the block. busy: None waits for another
    process to let go of it; an exception is raised instead, at once, when one holds it."""
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (fcntl.LOCK_NB if busy is not None else 0))
        except BlockingIOError:
            raise busy from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
