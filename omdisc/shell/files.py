"""The daemon's own files written whole or not at all: the map's alpha files, state.json, the
metrics file, the incarnation, the staged cluster key."""

from __future__ import annotations

import errno
import os
from pathlib import Path


def make_temp(directory: Path, prefix: str) -> tuple[int, str]:
    """A new file as tempfile.mkstemp makes it (O_EXCL, mode 0600, a name nobody can guess), its
    descriptor and path; without tempfile, which would bring shutil and more into the daemon."""
    for _ in range(100):
        path = os.path.join(directory, prefix + os.urandom(8).hex())
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600), path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", str(directory))


def write_atomic(path: Path, data: bytes, mode: int = 0o644, sync: bool = False) -> None:
    """Temp file + rename in the same directory: a reader sees the old file or the new, never half.
    With `sync`, the data is on disk before the rename (what must survive a power cut)."""
    fd, tmp = make_temp(path.parent, f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
