"""How a spool entry lies on disk: its file name, reading it safely, and which read errors are whose.

An entry is one file named `<sequence>.<a|n>.json` (`a` for actionable, `n` for not); one that
cannot be read is renamed `<name>.bad`, and a write in progress is `<name>.tmp`.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

ASIDE = ".bad"
TORN = ".tmp"
_ACTIONABLE = "a"
_DROPPABLE = "n"

# The disk has no room: shedding non-actionable entries may make some.
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
# The process is short of a resource; the entry is fine and a later read will work.
PROCESS_SHORT = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS, errno.EAGAIN, errno.EINTR})
# Reading this entry will never work.
UNREADABLE = frozenset(
    {
        errno.EISDIR,
        errno.ELOOP,  # a symlink in an entry's place (entries are opened with O_NOFOLLOW)
        errno.EACCES,
        errno.EPERM,
        errno.ENOTDIR,
        errno.EINVAL,  # not a regular file
        errno.ENXIO,
    }
)


@dataclass(frozen=True, slots=True)
class EntryName:
    """What an entry's file name says: its sequence number and whether it is actionable."""

    seq: int
    actionable: bool

    @property
    def name(self) -> str:
        return f"{self.seq:012d}.{_ACTIONABLE if self.actionable else _DROPPABLE}.json"

    @classmethod
    def parse(cls, name: str) -> EntryName | None:
        """The entry a file name (without `.bad`) stands for; None for any other file."""
        parts = name.split(".")
        if len(parts) != 3 or parts[2] != "json" or not parts[0].isdigit():
            return None
        if parts[1] not in (_ACTIONABLE, _DROPPABLE):
            return None
        return cls(int(parts[0]), parts[1] == _ACTIONABLE)


def read_entry(path: Path) -> bytes:
    """An entry's bytes. Only a regular file is read: a symlink fails with ELOOP, a directory with
    EISDIR, anything else (a FIFO, a device) with EINVAL; opened without blocking, so a FIFO cannot
    hang the reader."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as file:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        return file.read()


def entry_size(path: Path) -> int:
    """What a loaded entry counts against the budget: a regular file's size, else nothing."""
    try:
        info = path.lstat()
    except OSError:
        return 0
    return info.st_size if stat.S_ISREG(info.st_mode) else 0


def unlink(path: Path) -> OSError | None:
    """Delete the file if it is there; the error when it could not be deleted."""
    try:
        path.unlink(missing_ok=True)
    except OSError as error:
        return error
    return None
