"""Reading an input file that may be hostile: only a regular file, and never more than a limit.

`/dev/zero` would be read forever, a FIFO blocks its reader until someone writes, and a sparse
3 GB file fills memory; a path named on the command line (or found in a folder) may be any of
them. The file is opened without blocking, checked to be a regular file, and read up to the
limit plus one byte, so "too large" is known without reading more.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class FileRefused(Exception):
    """The file cannot be read as an input: `reason` says why, in a few words."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def read_limited(path: str | Path, limit: int) -> bytes:
    """The bytes of the regular file at `path`; `FileRefused` for anything else, or when the file
    holds more than `limit` bytes."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        descriptor = os.open(path, flags)
    except OSError as exc:
        raise FileRefused(f"cannot read file: {exc.strerror or exc}") from exc
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise FileRefused(f"not a regular file ({_kind(mode)}); only files are read")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(descriptor, min(limit + 1 - size, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise FileRefused(f"cannot read file: {exc.strerror or exc}") from exc
    finally:
        os.close(descriptor)
    if size > limit:
        raise FileRefused(f"file is larger than {limit} bytes")
    return b"".join(chunks)


__all__ = ["FileRefused", "read_limited"]
