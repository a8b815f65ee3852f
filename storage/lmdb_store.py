"""The LMDB store: the only module that imports lmdb.

Fixed choices, asserted at open: never `writemap` (a full disk would then kill the process with
SIGBUS instead of failing a commit); `sync` and `metasync` on in the default sync mode. A lock file
refuses a second broker on the same directory. The map starts small and grows between commits up
to `max_map_bytes`; a file of `reserve_bytes` is kept on the same disk and given up when the disk
fills, so receives and deletes go on while sends are refused. A full disk reaches a commit as
ENOSPC, or as EIO when LMDB's write came up short (it reports any short write as EIO): an EIO is a
full disk when the file system has too little room left for that commit, a fault otherwise. The
directories are private (0700) and the files (the LMDB files, the lock, the reserve) 0600, whatever
the umask (private.py); a read-only open changes no permissions.

Pages of the file stay mapped into the process once a commit has read them through LMDB's map
(copy-on-write reads each page it changes, and the kernel maps the page's cached neighbours with
it): appending, about a third of what was written stayed resident, counted in the broker's RSS
(100,000 pending pushes: 150 MiB). After recovery, and after every MAP_TRIM_BYTES of log appended
or RELEASE_MAPPED_EVERY_COMMITS commits, the map's resident pages are dropped (madvise
MADV_DONTNEED, on Linux): the map is read-only and shared, so that only unmaps them; the page
cache keeps them, and a read maps a page back in.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import lmdb

from .private import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, make_private_dir, open_private, tighten
from .store import DataDirectoryInUse, DataDirectoryUnusable, MapFull, Store, StorageError, StorageFull
from .tables import TABLES, Change, Delete, DeleteRange, Put

SYNC_MODES = ("full", "os")
INITIAL_MAP_BYTES = 64 << 20
LOCK_FILE = "dovecote.lock"
MAP_TRIM_BYTES = 4 << 20  # log bytes appended between two drops of the map's resident pages
RESERVE_FILE = "reserve.bin"
LMDB_DIR = "lmdb"
# An EIO with less free space than twice the commit's log records (the state tables hold copies)
# plus this is a full disk, not a failing device: LMDB writes whole pages, and copies of the pages
# it changes.
FULL_DISK_SLACK_BYTES = 1 << 20
MADV_DONTNEED = mmap.MADV_DONTNEED
# Commits read the pages they change, and receives read bodies, through the map; so that these do
# not pile up in RSS, the mapped pages are released after this many commits, or MAP_TRIM_BYTES of
# log appended, whichever comes first (a fraction of a millisecond each time).
RELEASE_MAPPED_EVERY_COMMITS = 200
_libc = ctypes.CDLL(None, use_errno=True)


class LmdbStore(Store):
    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        sync_mode: str = "full",
        max_map_bytes: int = 64 << 30,
        initial_map_bytes: int = INITIAL_MAP_BYTES,
        reserve_bytes: int = 16 << 20,
        readonly: bool = False,
        create: bool = True,
    ) -> None:
        """readonly=True opens for reading only, beside a running broker if there is one (LMDB
        readers do not block its writer); it takes no directory lock and keeps no reserve.
        create=False (implied by readonly) refuses a directory that holds no store, creating nothing.
        Raises DataDirectoryUnusable when the directory cannot be created, read or written."""
        if sync_mode not in SYNC_MODES:
            raise ValueError(f"sync mode must be one of {SYNC_MODES}, not {sync_mode!r}")
        self.data_dir = Path(data_dir)
        self._lock_fd = None
        db_path = self.data_dir / LMDB_DIR
        try:
            if (readonly or not create) and not (db_path / "data.mdb").exists():
                raise DataDirectoryUnusable(f"{self.data_dir} holds no dovecote store")
            if not readonly:  # (read-only, they exist: data.mdb does)
                make_private_dir(self.data_dir, parents=True, tighten_existing=False)
                self._lock_fd = _lock_directory(self.data_dir / LOCK_FILE)
                tighten(self.data_dir, PRIVATE_DIR_MODE)  # once it is known to be ours to use
                make_private_dir(db_path)
                for path in (db_path / "data.mdb", db_path / "lock.mdb", self.data_dir / RESERVE_FILE):
                    tighten(path, PRIVATE_FILE_MODE)
            existing = (db_path / "data.mdb").stat().st_size if (db_path / "data.mdb").exists() else 0
        except OSError as exc:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
            detail = f" ({exc.filename})" if exc.filename and Path(exc.filename) != self.data_dir else ""
            raise DataDirectoryUnusable(f"cannot use the data directory {self.data_dir}: {exc.strerror}{detail}") from None
        self._max_map_bytes = max_map_bytes
        self._data_file = os.path.realpath(db_path / "data.mdb")  # as /proc/self/maps names it
        self._commits_since_release = 0  # the writer's (in _apply)
        self._appended_since_release = 0
        self._reserve_path = self.data_dir / RESERVE_FILE
        self._reserve_bytes = reserve_bytes
        durable = sync_mode == "full"
        self.syncs_each_commit = durable and not readonly
        try:
            self._env = lmdb.open(
                str(db_path),
                map_size=min(max(initial_map_bytes, existing * 2), max_map_bytes),
                max_dbs=len(TABLES),
                subdir=True,
                sync=durable,
                metasync=durable,
                writemap=False,
                map_async=False,
                readahead=False,
                lock=True,
                readonly=readonly,
                mode=PRIVATE_FILE_MODE,  # the LMDB files' mode when made (the directory exists already)
            )
        except lmdb.Error as exc:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
            if isinstance(exc, lmdb.ReadonlyError):  # EACCES, EROFS: LMDB's files are not writable
                raise DataDirectoryUnusable(f"cannot use the data directory {self.data_dir}: {exc}") from exc
            raise StorageError(f"cannot open the store in {db_path}: {exc}") from exc
        flags = self._env.flags()
        assert flags["writemap"] is False
        assert readonly or (flags["sync"] is durable and flags["metasync"] is durable)
        self._env.reader_check()  # reap readers left by a process that died
        self._dbs = {}
        for name in TABLES:
            try:
                self._dbs[name] = self._env.open_db(name.encode(), create=not readonly)
            except lmdb.NotFoundError:
                pass  # read-only, on data an older version wrote: that table is empty
        self.refresh_last_lsn()
        try:
            self.format_version = self.check_format(writable=not readonly)
        except StorageError:
            self.close()
            raise
        if not readonly:
            self.restore_reserve()

    # --- primitives ---------------------------------------------------------------------------
    def _scan(
        self, table: str, first: bytes | None = None, last: bytes | None = None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        if table not in self._dbs:
            return
        with self._env.begin(db=self._dbs[table], buffers=True) as txn:
            cursor = txn.cursor()
            if reverse:
                positioned = cursor.last() if last is None else _seek_at_or_before(cursor, last)
                iterator = cursor.iterprev() if positioned else iter(())
                for key, value in iterator:
                    key = bytes(key)
                    if first is not None and key < first:
                        return
                    yield key, value
                return
            positioned = cursor.first() if first is None else cursor.set_range(first)
            if not positioned:
                return
            for key, value in cursor.iternext():
                key = bytes(key)
                if last is not None and key > last:
                    return
                yield key, value

    def _get_many(self, table: str, keys_: Sequence[bytes]) -> list[bytes | None]:
        if table not in self._dbs:
            return [None] * len(keys_)
        with self._env.begin(db=self._dbs[table], buffers=False) as txn:
            return [txn.get(key) for key in keys_]

    def _apply(self, log_puts: list[tuple[bytes, bytes]], changes: list[Change]) -> None:
        try:
            with self._env.begin(write=True) as txn:
                if log_puts:
                    log_cursor = txn.cursor(self._dbs["log"])
                    for key, value in log_puts:
                        log_cursor.put(key, value, append=True)
                for change in changes:
                    db = self._dbs[change.table]
                    if type(change) is Put:
                        txn.put(change.key, change.value, db=db)
                    elif type(change) is Delete:
                        txn.delete(change.key, db=db)
                    elif type(change) is DeleteRange:
                        _delete_range(txn.cursor(db), change.first_key, change.last_key)
            self._appended_since_release += sum(len(value) for _, value in log_puts)
        except lmdb.MapFullError as exc:
            raise MapFull(str(exc)) from exc
        except lmdb.Error as exc:
            code = getattr(exc, "code", None)
            if code == errno.EIO and self._too_full_for(log_puts):
                code = errno.ENOSPC
            if code == errno.ENOSPC:
                raise StorageFull(f"the disk holding {self.data_dir} is full") from exc
            raise StorageError(f"commit failed: {exc}") from exc
        self._commits_since_release += 1
        if self._commits_since_release >= RELEASE_MAPPED_EVERY_COMMITS or self._appended_since_release >= MAP_TRIM_BYTES:
            self.release_mapped_pages()

    def close(self) -> None:
        self._env.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)

    def refresh_last_lsn(self) -> int:
        """Re-read the log's end (for a reader following a running broker)."""
        with self._env.begin(db=self._dbs["log"]) as txn:
            cursor = txn.cursor()
            self.last_lsn = int.from_bytes(cursor.key(), "big") if cursor.last() else 0
        return self.last_lsn

    def disk_bytes(self) -> int:
        return (self.data_dir / LMDB_DIR / "data.mdb").stat().st_size

    # --- space --------------------------------------------------------------------------------
    def grow_map(self) -> bool:
        current = self._env.info()["map_size"]
        if current >= self._max_map_bytes:
            return False
        self._env.set_mapsize(min(current * 2, self._max_map_bytes))
        return True

    def room_bytes(self) -> int:
        """Room for new data: the least of the map's room below its limit and the disk's free space
        with the data file's unused pages, less what the reserve has yet to take back. Pages LMDB
        freed are counted as room: what consumers drained is room again, though the file never shrinks."""
        used = self._used_bytes()
        allocated = (self.data_dir / LMDB_DIR / "data.mdb").stat().st_blocks * 512
        try:
            reserve_held = self._reserve_path.stat().st_size
        except FileNotFoundError:
            reserve_held = 0
        reserve_missing = max(0, self._reserve_bytes - reserve_held)
        disk_room = self._free_disk_bytes() - reserve_missing + max(0, allocated - used)
        return min(self._max_map_bytes - used, disk_room)

    def _used_bytes(self) -> int:
        """The pages the tables take (the free list's own few pages aside)."""
        with self._env.begin() as txn:
            stats = [self._env.stat()] + [txn.stat(db) for db in self._dbs.values()]
        pages = sum(stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"] for stat in stats)
        return (pages + 2) * stats[0]["psize"]  # and the two meta pages

    def _too_full_for(self, log_puts: list[tuple[bytes, bytes]]) -> bool:
        """After an EIO: has the disk too little room for this commit (else the device failed)?"""
        needed = FULL_DISK_SLACK_BYTES + 2 * sum(len(key) + len(value) for key, value in log_puts)
        try:
            return self._free_disk_bytes() < needed
        except OSError:
            return False

    def _free_disk_bytes(self) -> int:
        disk = os.statvfs(self.data_dir)
        # root may also write into the blocks a file system keeps back for it
        return (disk.f_bfree if os.geteuid() == 0 else disk.f_bavail) * disk.f_frsize

    def release_reserve(self) -> bool:
        try:
            self._reserve_path.unlink()
        except FileNotFoundError:
            return False
        return True

    def restore_reserve(self) -> bool:
        if self._reserve_bytes <= 0:
            return True
        try:
            if self._reserve_path.stat().st_size >= self._reserve_bytes:
                return True
        except FileNotFoundError:
            pass
        if self._free_disk_bytes() < self._reserve_bytes:
            return False
        try:
            with os.fdopen(open_private(self._reserve_path, os.O_WRONLY | os.O_TRUNC), "wb") as reserve:
                os.posix_fallocate(reserve.fileno(), 0, self._reserve_bytes)
                os.fsync(reserve.fileno())
        except OSError:
            self._reserve_path.unlink(missing_ok=True)
            return False
        return True

    def release_mapped_pages(self) -> None:
        """Drop this process's mappings of the data file's pages (MADV_DONTNEED). The map is
        shared and read-only (no writemap), so nothing is lost: the pages stay in the page cache and
        the next read maps them again. Without this, every page recovery or a reader touched counts
        in the broker's RSS for as long as it runs. Linux only (elsewhere, nothing is done)."""
        self._commits_since_release = self._appended_since_release = 0
        try:
            with open("/proc/self/maps") as maps:
                ranges = [line.split(None, 1)[0] for line in maps if line.rstrip("\n").endswith(" " + self._data_file)]
        except OSError:  # not Linux: nothing to drop
            return
        for address_range in ranges:
            start, end = (int(address, 16) for address in address_range.split("-"))
            _libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), MADV_DONTNEED)

    def map_size_bytes(self) -> int:
        return self._env.info()["map_size"]


def _lock_directory(path: Path) -> int:
    fd = open_private(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise DataDirectoryInUse(
            f"{path.parent} is in use by another dovecote process (pid {holder or 'unknown'})"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _seek_at_or_before(cursor: lmdb.Cursor, key: bytes) -> bool:
    if cursor.set_range(key):
        return bytes(cursor.key()) == key or cursor.prev()
    return cursor.last()


def _delete_range(cursor: lmdb.Cursor, first: bytes, last: bytes) -> None:
    if not cursor.set_range(first):
        return
    while cursor.key() and cursor.key() <= last:
        if not cursor.delete():
            break
