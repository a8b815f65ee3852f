"""Files and directories only the broker's user may read: directories 0700, files 0600, whatever
the umask (it can only take bits away from what is asked, and what was made is then set exactly).

A directory or file that exists already with more open permissions (made by an older dovecote, or
by hand) is tightened, and the tightening logged: message bodies must not stay readable to other
users because the directory predates this rule. One the broker's user does not own, or cannot
change, is left as it is, with a warning.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
PARENT_DIR_MODE = 0o755  # missing parents of a data directory: traversable, never writable by others

log = logging.getLogger("dovecote.storage")


def make_private_dir(path: Path, *, parents: bool = False, tighten_existing: bool = True) -> None:
    """Make `path` a directory of mode 0700 (its missing parents 0755, less the umask), or tighten
    it if it exists (unless told not to: see tighten). Raises OSError."""
    if parents:
        missing = [parent for parent in path.parents if not parent.exists()]
        for parent in reversed(missing):
            try:
                os.mkdir(parent, PARENT_DIR_MODE)
            except FileExistsError:
                pass
    try:
        os.mkdir(path, PRIVATE_DIR_MODE)
    except FileExistsError:
        if not path.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path)) from None
        if tighten_existing:
            tighten(path, PRIVATE_DIR_MODE)
    else:
        os.chmod(path, PRIVATE_DIR_MODE)


def open_private(path: Path, flags: int) -> int:
    """os.open(path, flags | O_CREAT) for a file of mode 0600, tightened if it existed with more
    open permissions. Raises OSError."""
    fd = os.open(path, flags | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        _narrow(path, stat.S_IMODE(os.fstat(fd).st_mode), PRIVATE_FILE_MODE, lambda new: os.fchmod(fd, new))
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_private(path: Path, data: bytes) -> None:
    """Replace the contents of `path` with `data`, the file mode 0600. Raises OSError."""
    fd = open_private(path, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def tighten(path: Path, mode: int) -> None:
    """Take away the permissions of `path` beyond `mode` (if it exists; a symbolic link is
    followed, as chmod follows it), logging what changed."""
    try:
        current = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return
    _narrow(path, current, mode, lambda new: os.chmod(path, new))


def _narrow(path: Path, current: int, mode: int, change: Callable[[int], None]) -> None:
    if current & ~mode == 0:
        return
    try:
        change(current & mode)
    except PermissionError:
        log.warning("%s is mode %o, open to other users, and this user cannot change it: make it %o", path, current, current & mode)
        return
    log.warning("tightened %s from mode %o to %o: only the broker's user may read it", path, current, current & mode)
