"""Writing files so that readers never see half of one: the suite's one atomic writer.

`atomic_write(path, write)` writes through a temporary file in the same folder, named
`.<name>.<host>.<pid>.tmp`, fsyncs it, gives it the permissions of a normal new file (0666 less
the umask: readable by the other users of a shared results folder, where mkstemp's 0600 is not)
and renames it over `path`: a crash leaves the old file or the new one. The host and pid in
the name let the record store (bench/store.py) delete the temporary files that killed
processes of this host left behind, on a folder that several hosts share.
"""
from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

HOST = socket.gethostname().replace(".", "_")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call `write(f)` on a binary file object, then publish the result at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{HOST}.{os.getpid()}.",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))
