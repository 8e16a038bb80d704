"""Files the platform writes for itself (under `.data/` by default): private to the user that runs it.

What lands there is sensitive: generated secrets, development mail whose links answer surveys and earn points,
logs. Modes are set explicitly, not left to the umask: directories 0700 (0711 for a parent that another local
user must traverse, such as the embedded PostgreSQL's own user), files 0600, created with that mode (never
readable by others even for an instant) and replaced atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "PRIVATE_DIRECTORY",
    "PRIVATE_FILE",
    "TRAVERSABLE_DIRECTORY",
    "append_private",
    "private_directory",
    "write_private",
]

PRIVATE_DIRECTORY = 0o700
TRAVERSABLE_DIRECTORY = 0o711
PRIVATE_FILE = 0o600


def private_directory(path: Path, mode: int = PRIVATE_DIRECTORY) -> Path:
    """`path` (and missing parents, with the same mode) as a directory with exactly `mode`."""
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    path.chmod(mode)  # mkdir's mode passes through the umask, and an existing directory keeps its own
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` (mode 0600) through a temporary file and an atomic rename."""
    partial = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    try:
        os.fchmod(descriptor, PRIVATE_FILE)  # a leftover temporary file keeps its old mode through O_CREAT
        with os.fdopen(descriptor, "wb", closefd=False) as file:
            file.write(data)
    finally:
        os.close(descriptor)
    os.replace(partial, path)


def append_private(path: Path) -> BinaryIO:
    """`path` opened for appending in binary, created with mode 0600 (an existing file is made 0600)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE)
    os.fchmod(descriptor, PRIVATE_FILE)
    return os.fdopen(descriptor, "ab")
