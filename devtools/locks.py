"""An exclusive lock between processes on one machine: flock on Linux/macOS, msvcrt on Windows."""
import time
from contextlib import contextmanager

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt


@contextmanager
def exclusive_lock(path, poll_seconds=0.5):
    """Hold an exclusive lock on the file `path` (made if missing) for the `with` block; waits for it."""
    with open(path, "a+") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        else:
            while True:
                try:
                    handle.seek(0)
                    msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
                    break
                except OSError:  # held by another process
                    time.sleep(poll_seconds)
        yield  # closing the file releases the lock on every platform
