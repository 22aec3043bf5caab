"""Files dbops keeps for itself ($DBOPS_HOME: snapshots, keys, server state): folders 0700, files 0600 from their
first byte, written through no symlink, and no change to a directory dbops did not create.

Statement texts, URLs and keys end up in these files; a umask of 022 would make them readable by every local user.
"""

from __future__ import annotations

import os
from pathlib import Path

from dbops.errors import DbopsError

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private_dir(path: Path) -> Path:
    """Create ``path`` and its missing parents as 0700 directories; existing ones are left exactly as they are
    (a parent such as /tmp or the project folder is never widened, nor narrowed)."""
    path = Path(path).absolute()
    missing = []
    probe = path
    while not probe.exists() and not probe.is_symlink():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            continue  # created meanwhile by someone else: not ours to change
        os.chmod(directory, PRIVATE_DIR)  # mkdir's mode is filtered by the umask
    if path.is_symlink() or not path.is_dir():
        raise DbopsError(f"{path} is not a directory (or is a symbolic link)",
                         "remove it, or point DBOPS_HOME at a directory of its own")
    return path


def write_private(path: Path, data: str | bytes) -> Path:
    """Replace ``path`` atomically with ``data``, readable by its owner only (the temporary file too)."""
    path = Path(path).absolute()
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE_FILE)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def touch_private(path: Path) -> Path:
    """Create ``path`` empty and 0600 if missing; an existing file is narrowed to 0600 and kept."""
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, PRIVATE_FILE)
    os.close(fd)
    os.chmod(path, PRIVATE_FILE)
    return path
