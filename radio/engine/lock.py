"""One run per ``results_dir``: its main rank holds an exclusive lock on ``results_dir/.lock``.

Two runs writing one folder would interleave checkpoints and metrics and end in a crash (a second launch
of a job that is still running, ranks left behind by a killed launcher ...). The lock is an ``flock``, so it
is released by the kernel however the holder ends, ``kill -9`` included; the file records who held it.
File systems without locks (some network mounts) run unlocked.
"""

import errno
import fcntl
import os
import socket
import time
from typing import Optional

from radio.run.layout import LOCK_FILE


class ResultsDirLock:
    def __init__(self, results_dir: str):
        self.path = os.path.join(results_dir, LOCK_FILE)
        self._fd: Optional[int] = None

    def acquire(self) -> Optional[str]:
        """Take the lock; returns why it could not be taken (None: taken, or locks unsupported here)."""
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return (
                    f"results_dir={os.path.dirname(self.path)!r} is in use by another run ({holder}); wait for it to "
                    f"end, stop it (touch {os.path.dirname(self.path)}/STOP: it checkpoints and exits), or use "
                    "another results_dir."
                )
            return None  # no locking on this file system
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.ctime()}\n".encode(), 0)
        self._fd = fd
        return None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
