"""Encryption at rest: message contents sealed with AES-256-GCM under data keys, and the data keys
wrapped by the operator's master key. The one module of dovecote that encrypts (`cryptography`).

Theory of operation
-------------------
What is sealed. A MessageSent stored in a queue with `KmsMasterKeyId` or `SqsManagedSseEnabled=true`,
a Published or PushQueued of a topic with `KmsMasterKeyId`, and a MessageSent that such a topic
stores in a queue that does not encrypt by itself (its deliveries, in the publish's commit):
the body (a publish's message), the subject, the message attributes and the system attributes go,
msgpack-encoded, into one AES-GCM ciphertext, the record's `sealed`, and those fields are stored
empty. Everything else stays clear: queue and topic names and ids, seqs, MessageIds, times, delays,
group and deduplication ids (a content-based one is the body's SHA-256), receive counts: recovery,
the log's filters and the state tables need them, and none is a message's content. Each
ciphertext is bound to its record: its nonce ends with the record's LSN (unique in the store, and
covered by the tag), which must be the record's seq, and its additional data is the MessageId. So
a ciphertext put in another record, or taken from another data directory, is refused as damage
rather than served.

Who encrypts, with which key alias (the `KmsMasterKeyId`, or SSE-SQS) and reuse period, the sealer
reads off the records the store commits (QueueCreated ... TopicDeleted) through a policy function
the wiring gives it (actors/sse_policy.py), so it follows commit order exactly: a message committed
after the SetQueueAttributes that turned encryption on is sealed, one stored before stays as it
was, and turning encryption off seals nothing new but opens what was sealed as before.

Where. The store seals in `commit`, after each record's LSN is stamped (in the writer's worker
thread; `cryptography` releases the GIL only for large buffers, so for most messages this is
Python work like any other, about 1.5 us a message), and opens in `read_messages`, `read_pushes` and `read_archive`, so the
actors and their pure cores never see a ciphertext; `dovecote log` opens with the master key file,
and shows `<encrypted>` without it. Recovery reads only clear fields and opens nothing.

Keys. The master key file holds base64 AES-256 keys, one a line; the first wraps, the others are
kept only to unwrap data keys not yet re-wrapped. A master key is named by a fingerprint (a hash,
never the key), and the store holds only fingerprints and wrapped keys. A data key is 32 random
bytes, one current per alias, made in the commit of the first record it seals and logged just
before that record as a DataKeyCreated whose LSN is the key's id; records name the key they used.
It is replaced for records stamped (wall clock) at or after its creation plus the shortest
`KmsDataKeyReusePeriodSeconds` among the queues that use it (a wall-clock step makes a rotation
only early or late). Nonces are 4 random bytes drawn per commit and the record's 8-byte LSN: an
LSN is sealed once per commit attempt, and a commit retried after a failure draws new bytes.

Every change a commit makes here (a key made, re-wrapped or retired, an owner's policy) is staged
and kept only once the store has it (`done`), or dropped (`abort`): memory never holds a key the
store lacks. Rotating the master key: the operator puts a new key first in the file and reloads it
(SIGHUP); new data keys are wrapped by it at once, `rewrap_records` gives a DataKeyRewrapped for
every data key wrapped by another, committed through the writer like any record, after which the
old key may leave the file. A data key that is not its alias's newest is retired (DataKeyRetired)
once the oldest LSN still stored anywhere (log, messages, pending pushes, archive) is past its
successor's id: everything it sealed has an LSN below that.

Threads. `commit` (and so staging, `done`, `abort`) runs in the writer's worker thread, one at a
time; `open` runs in the actors' thread. Committed state is replaced, never changed in place, and
master keys are swapped by one assignment, so a reader always sees a whole state.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .framing import DamagedValue
from .private import open_private
from .records import (
    DataKeyCreated,
    DataKeyRetired,
    DataKeyRewrapped,
    DataKeyState,
    MessageSent,
    Published,
    PushQueued,
    QueueAttributesChanged,
    QueueCreated,
    QueueDeleted,
    Record,
    Sealed,
    TopicAttributesChanged,
    TopicCreated,
    TopicDeleted,
    decode_sealed_content,
)
from .store import StorageError

KEY_BYTES = 32  # AES-256, master and data keys alike
KEY_FILE_NAME = "sse-master.key"  # the master key file in the data directory, unless another is configured
NONCE_BYTES = 12
NONCE_PREFIX_BYTES = 4  # random, per commit; the nonce's other 8 bytes are the record's LSN
_U64 = struct.Struct(">Q")
_replace = msgspec.structs.replace
_encode = msgspec.msgpack.Encoder().encode

# (attributes, is a topic) -> (key alias, reuse period in seconds), or None: stored in clear.
KeyPolicy = Callable[[Mapping[str, str], bool], "tuple[str, int] | None"]


class KeyUnavailable(StorageError):
    """The master key file cannot be read or made, or lacks a key that wraps a stored data key."""


class SealBroken(DamagedValue):
    """A sealed record that does not open: its data key is not in the store, or its tag fails
    (a damaged or foreign ciphertext)."""


def fingerprint(key: bytes) -> str:
    """A master key's name, as the store and the log show it: a hash, from which the key cannot be had."""
    return "mk-" + hashlib.sha256(b"dovecote sse master key\0" + key).hexdigest()[:16]


# --- the master key file ---------------------------------------------------------------------------

KEY_FILE_HEADER = (
    "# dovecote's master keys for encryption at rest, one base64 AES-256 key a line. The first wraps\n"
    "# data keys; the others only unwrap data keys not yet re-wrapped (`dovecote rotate-key`).\n"
    "# Keep it secret and keep a copy: without it, encrypted messages cannot be read.\n"
)


class MasterKeys:
    """The keys of one reading of the key file. Immutable."""

    def __init__(self, keys: Sequence[bytes], source: str = "") -> None:
        if not keys:
            raise KeyUnavailable(f"the master key file {source} holds no key")
        self.source = source
        self.fingerprints = [fingerprint(key) for key in keys]
        self.current = self.fingerprints[0]
        self._ciphers = {name: AESGCM(key) for name, key in zip(self.fingerprints, keys)}

    def wrap(self, data_key: bytes, key_id: int, alias: str, created_ms: int) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._ciphers[self.current].encrypt(nonce, data_key, _wrap_aad(key_id, alias, created_ms))

    def unwrap(self, state: DataKeyState) -> bytes:
        """Raises KeyUnavailable when no key of the file wraps it (or it was damaged)."""
        cipher = self._ciphers.get(state.master_key)
        if cipher is None:
            raise KeyUnavailable(
                f"data key {state.key_id} ({state.alias}) is wrapped by master key {state.master_key}, "
                f"which the master key file {self.source} does not hold"
            )
        try:
            return cipher.decrypt(state.wrapped[:NONCE_BYTES], state.wrapped[NONCE_BYTES:], _wrap_aad(state.key_id, state.alias, state.created_ms))
        except InvalidTag:
            raise KeyUnavailable(f"data key {state.key_id} ({state.alias}) does not unwrap with master key {state.master_key}") from None


def _wrap_aad(key_id: int, alias: str, created_ms: int) -> bytes:
    return b"dovecote data key|%d|%s|%d" % (key_id, alias.encode(), created_ms)


def read_key_file(path: str | os.PathLike[str]) -> MasterKeys:
    """Raises KeyUnavailable naming the file and what is wrong (FileNotFoundError's message when
    it is missing)."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise KeyUnavailable(f"cannot read the master key file {path}: {getattr(error, 'strerror', None) or error}") from None
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            key = base64.b64decode(line, validate=True)
        except binascii.Error:
            key = b""
        if len(key) != KEY_BYTES:
            raise KeyUnavailable(f"{path}:{number}: not a base64 {KEY_BYTES}-byte key")
        keys.append(key)
    return MasterKeys(keys, str(path))


def write_key_file(path: str | os.PathLike[str], keys: Sequence[bytes]) -> None:
    """Write the keys (the first current) as the whole file, mode 0600 whatever the umask, replacing
    any file there in one rename."""
    path = Path(path)
    lines = [KEY_FILE_HEADER]
    for number, key in enumerate(keys):
        lines.append(f"# {fingerprint(key)}{' (current)' if number == 0 else ''}\n{base64.b64encode(key).decode()}\n")
    scratch = path.with_name(path.name + ".new")
    fd = open_private(scratch, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, "".join(lines).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(scratch, path)


def add_master_key(path: str | os.PathLike[str]) -> str:
    """Put a new random key first in the file (made if missing), keeping the others: what `dovecote
    rotate-key` does. Returns its fingerprint."""
    existing = list(_raw_keys(path)) if Path(path).exists() else []
    key = os.urandom(KEY_BYTES)
    write_key_file(path, [key, *existing])
    return fingerprint(key)


def keep_only_current(path: str | os.PathLike[str]) -> list[str]:
    """Drop every key but the first from the file; returns the fingerprints dropped."""
    keys = list(_raw_keys(path))
    write_key_file(path, keys[:1])
    return [fingerprint(key) for key in keys[1:]]


def _raw_keys(path: str | os.PathLike[str]) -> Iterable[bytes]:
    read_key_file(path)  # checks it
    for line in Path(path).read_text().splitlines():
        if line.strip() and not line.strip().startswith("#"):
            yield base64.b64decode(line.strip())


class KeyFile:
    """Where the master keys come from: a file, read at first need and on `reload`, and made (one
    new key, 0600) at first need when it does not exist and `create` is set, but never while the
    store holds data keys (they need the keys that were there)."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = Path(path)
        self._create = create
        self._keys: MasterKeys | None = None

    def keys(self, *, may_create: bool = True) -> MasterKeys:
        """Raises KeyUnavailable."""
        keys = self._keys
        if keys is None:
            if self._create and may_create and not self.path.exists():
                try:
                    add_master_key(self.path)
                except OSError as error:
                    raise KeyUnavailable(f"cannot make the master key file {self.path}: {error.strerror or error}") from None
            keys = self._keys = read_key_file(self.path)
        return keys

    def loaded(self) -> MasterKeys | None:
        return self._keys

    def read(self) -> MasterKeys:
        """The file as it is now, without taking it on (see `use`). Raises KeyUnavailable."""
        return read_key_file(self.path)

    def use(self, keys: MasterKeys) -> None:
        self._keys = keys


# --- data keys and the sealer ------------------------------------------------------------------------


class DataKey:
    """A data key, unwrapped, with its cipher. Never changed: a re-wrapped key is a new DataKey."""

    __slots__ = ("key_id", "alias", "created_ms", "master_key", "wrapped", "secret", "encrypt", "decrypt")

    def __init__(self, key_id: int, alias: str, created_ms: int, master_key: str, wrapped: bytes, secret: bytes) -> None:
        self.key_id = key_id
        self.alias = alias
        self.created_ms = created_ms
        self.master_key = master_key
        self.wrapped = wrapped
        self.secret = secret
        cipher = AESGCM(secret)
        self.encrypt = cipher.encrypt  # bound once: sealing is on the send path
        self.decrypt = cipher.decrypt

    def rewrapped(self, master_key: str, wrapped: bytes) -> DataKey:
        return DataKey(self.key_id, self.alias, self.created_ms, master_key, wrapped, self.secret)


_CONFIGURATION = (QueueCreated, QueueAttributesChanged, TopicCreated, TopicAttributesChanged)
_GONE: object = object()  # staged: an owner or key removed


class Sealer:
    """Seals records in the store's commit and opens them on its reads (see the module's docstring).

    `keys`: the master key file (None: only what the keys already loaded allow, which is reading
    nothing sealed; the log viewer without a key file). `policy`: which owners seal (None: this
    sealer only opens, as the log viewer's)."""

    def __init__(self, keys: KeyFile | None, policy: KeyPolicy | None = None) -> None:
        self._key_file = keys
        self._policy = policy
        # committed state: replaced whole, never changed in place
        self._keys: dict[int, DataKey] = {}
        self._newest: dict[str, DataKey] = {}  # by alias
        self._owners: dict[int, tuple[str, int]] = {}  # queue or topic id -> (alias, reuse period ms)
        self._undecided: dict[int, DataKeyState] = {}  # stored keys that could not be unwrapped (no key file)
        # staged by the commit under way
        self._staged_keys: dict[int, object] = {}
        self._staged_newest: dict[str, DataKey] = {}
        self._staged_owners: dict[int, object] = {}
        self._salt = b""
        self.made: DataKeyCreated | None = None  # a key made for the record being committed: logged just before it
        self._retire_check_at_ms = 0

    # --- loading ---------------------------------------------------------------------------------
    def load(self, configuration: Iterable[Record], data_keys: Iterable[DataKeyState]) -> None:
        """The owners' policies from their stored configuration rows, and the stored data keys,
        unwrapped. Raises KeyUnavailable when a data key cannot be unwrapped and this sealer has a
        key file (without one, sealed records stay closed)."""
        owners: dict[int, tuple[str, int]] = {}
        for row in configuration:
            self._owner_change(row, owners)
        keys: dict[int, DataKey] = {}
        undecided: dict[int, DataKeyState] = {}
        states = list(data_keys)
        master = self._key_file.keys(may_create=False) if self._key_file is not None and states else None
        for state in states:
            if master is None:
                undecided[state.key_id] = state
            else:
                keys[state.key_id] = _data_key(state, master.unwrap(state))
        self._owners, self._keys, self._undecided = owners, keys, undecided
        self._newest = _newest_of(keys.values())

    @property
    def can_open(self) -> bool:
        """False when sealed records were found and no key file opens them."""
        return not self._undecided

    def holds(self, key_id: int) -> bool:
        """Whether records sealed with this data key open here."""
        return key_id in self._keys

    @property
    def has_key_file(self) -> bool:
        return self._key_file is not None

    def master_keys(self) -> MasterKeys | None:
        """The master keys in use (None: none was needed yet)."""
        return self._key_file.loaded() if self._key_file is not None else None

    def fingerprints_in_use(self) -> set[str]:
        return {key.master_key for key in self._keys.values()} | {state.master_key for state in self._undecided.values()}

    def key_count(self) -> int:
        return len(self._keys) + len(self._undecided)

    # --- commit: staging -----------------------------------------------------------------------------
    def begin(self) -> None:
        """A commit starts: a fresh nonce prefix for it."""
        self._salt = os.urandom(NONCE_PREFIX_BYTES)
        self.made = None

    def key_for(self, record: Record, fallback_owner: int, next_lsn: int) -> DataKey | None:
        """The data key to seal `record` with (None: it is stored clear). A key made for it is in
        `made`, to be logged at next_lsn, before the record. Configuration and key records are
        noted (staged). Raises KeyUnavailable when a key must be made and the master key file
        cannot be had."""
        kind = type(record)
        if kind is MessageSent:
            owner = record.queue_id  # type: ignore[attr-defined]
        elif kind is Published or kind is PushQueued:
            owner = record.topic_id  # type: ignore[attr-defined]
        else:
            if kind in _CONFIGURATION or kind is QueueDeleted or kind is TopicDeleted:
                self._owner_change(record, self._staged_owners)
            elif kind is DataKeyRewrapped:
                self._rewrapped(record)  # type: ignore[arg-type]
            elif kind is DataKeyRetired:
                self._staged_keys[record.key_id] = _GONE  # type: ignore[attr-defined]
            return None
        policy = self._owners.get(owner) if not self._staged_owners else self._policy_of(owner)
        if policy is None:
            if not fallback_owner:
                return None
            policy = self._policy_of(fallback_owner)
            if policy is None:
                return None
        alias, period_ms = policy
        key = self._staged_newest.get(alias) if self._staged_newest else None
        if key is None:
            key = self._newest.get(alias)
        at_ms = record.at_ms
        if key is not None and key.created_ms <= at_ms < key.created_ms + period_ms:
            return key
        return self._make(alias, at_ms, next_lsn)

    def _policy_of(self, owner: int) -> tuple[str, int] | None:
        if self._staged_owners:
            staged = self._staged_owners.get(owner)
            if staged is not None:
                return None if staged is _GONE else staged  # type: ignore[return-value]
        return self._owners.get(owner)

    def _owner_change(self, record: Record, owners: dict[int, object]) -> None:
        if isinstance(record, (QueueCreated, QueueAttributesChanged)):
            owner, policy = record.queue_id, self._policy(record.attributes, False) if self._policy else None
        elif isinstance(record, (TopicCreated, TopicAttributesChanged)):
            owner, policy = record.topic_id, self._policy(record.attributes, True) if self._policy else None
        elif isinstance(record, QueueDeleted):
            owner, policy = record.queue_id, None
        else:
            owner, policy = record.topic_id, None  # type: ignore[attr-defined]
        if policy is None:
            if owners is self._staged_owners:
                owners[owner] = _GONE
            else:
                owners.pop(owner, None)
        else:
            owners[owner] = (policy[0], policy[1] * 1000)

    def _make(self, alias: str, at_ms: int, key_id: int) -> DataKey:
        if self._key_file is None:
            raise KeyUnavailable("no master key file: records cannot be encrypted")
        master = self._key_file.keys()
        secret = os.urandom(KEY_BYTES)
        record = DataKeyCreated(at_ms, key_id, alias, at_ms, master.current, master.wrap(secret, key_id, alias, at_ms))
        key = _data_key(record, secret)
        self._staged_keys[key_id] = key
        self._staged_newest[alias] = key
        self.made = record
        return key

    def _rewrapped(self, record: DataKeyRewrapped) -> None:
        key = self._staged_keys.get(record.key_id) or self._keys.get(record.key_id)
        if isinstance(key, DataKey):
            self._staged_keys[record.key_id] = key.rewrapped(record.master_key, record.wrapped)

    def seal(self, record: Record, key: DataKey, lsn: int) -> Record:
        """The record as stored: its content in a ciphertext under `key`, its nonce this commit's
        prefix and the record's LSN (its seq, stamped already), its MessageId the additional data."""
        nonce = self._salt + _U64.pack(lsn)
        kind = type(record)
        # (the content is encoded as a plain array: what SealedContent decodes, without building one)
        if kind is MessageSent:
            content = _encode((record.body, record.attributes, record.system_attributes))  # type: ignore[attr-defined]
            sealed = Sealed(key.key_id, nonce, key.encrypt(nonce, content, record.message_id.encode()))  # type: ignore[attr-defined]
            return _replace(record, body="", attributes={}, system_attributes={}, sealed=sealed)
        if kind is Published:
            content = _encode((record.message, record.attributes, {}, record.subject))  # type: ignore[attr-defined]
            sealed = Sealed(key.key_id, nonce, key.encrypt(nonce, content, record.message_id.encode()))  # type: ignore[attr-defined]
            return _replace(record, message="", subject="", attributes={}, sealed=sealed)
        content = _encode((record.body, record.attributes, {}, record.subject))  # type: ignore[attr-defined]
        sealed = Sealed(key.key_id, nonce, key.encrypt(nonce, content, record.message_id.encode()))  # type: ignore[attr-defined]
        return _replace(record, body="", subject="", attributes={}, sealed=sealed)

    def done(self) -> None:
        """The commit is stored: what it staged is kept."""
        if self._staged_keys:
            keys = dict(self._keys)
            for key_id, key in self._staged_keys.items():
                if key is _GONE:
                    keys.pop(key_id, None)
                else:
                    keys[key_id] = key  # type: ignore[assignment]
            self._keys = keys
            self._newest = _newest_of(keys.values())
        if self._staged_owners:
            owners = dict(self._owners)
            for owner, policy in self._staged_owners.items():
                if policy is _GONE:
                    owners.pop(owner, None)
                else:
                    owners[owner] = policy  # type: ignore[assignment]
            self._owners = owners
        self.abort()

    def abort(self) -> None:
        """The commit failed: what it staged is dropped."""
        if self._staged_keys:
            self._staged_keys = {}
        if self._staged_newest:
            self._staged_newest = {}
        if self._staged_owners:
            self._staged_owners = {}
        self.made = None

    # --- reading -------------------------------------------------------------------------------------
    def open(self, record: Record) -> Record:
        """The record with its content in clear (and `sealed` None). Raises SealBroken."""
        sealed: Sealed = record.sealed  # type: ignore[attr-defined]
        key = self._keys.get(sealed.key_id)
        if key is None:
            reason = "whose key file is not given" if sealed.key_id in self._undecided else "which the store does not hold"
            raise SealBroken(f"encrypted with data key {sealed.key_id}, {reason}")
        if sealed.nonce[NONCE_PREFIX_BYTES:] != _U64.pack(record.seq):  # type: ignore[attr-defined]
            raise SealBroken(f"its ciphertext is not this record's (sealed for LSN {_lsn_of_nonce(sealed.nonce)})")
        try:
            content = decode_sealed_content(key.decrypt(sealed.nonce, sealed.ciphertext, record.message_id.encode()))  # type: ignore[attr-defined]
        except (InvalidTag, ValueError):  # ValueError: a nonce of another length; msgspec's errors are ValueErrors
            raise SealBroken(f"its ciphertext does not open with data key {sealed.key_id}: damaged, or not this record's") from None
        kind = type(record)
        if kind is MessageSent:
            return _replace(record, body=content.body, attributes=content.attributes, system_attributes=content.system_attributes, sealed=None)
        if kind is Published:
            return _replace(record, message=content.body, subject=content.subject, attributes=content.attributes, sealed=None)
        return _replace(record, body=content.body, subject=content.subject, attributes=content.attributes, sealed=None)

    def refresh(self, data_keys: Iterable[DataKeyState]) -> None:
        """Data keys made since `load` (a reader beside a running broker): unwrap the new ones."""
        master = self._key_file.keys(may_create=False) if self._key_file is not None else None
        keys = dict(self._keys)
        undecided = dict(self._undecided)
        for state in data_keys:
            known = keys.get(state.key_id)
            if known is not None and known.master_key == state.master_key:
                continue
            if master is None:
                undecided[state.key_id] = state
            else:
                keys[state.key_id] = _data_key(state, master.unwrap(state))
        self._keys, self._undecided = keys, undecided
        self._newest = _newest_of(keys.values())

    # --- master key rotation and retirement ----------------------------------------------------------
    def reload_master_keys(self) -> MasterKeys | None:
        """Read the key file again (SIGHUP). Data keys made from now on are wrapped by its first
        key. None: there is no key file, and none was needed yet (nothing to reload). Raises
        KeyUnavailable (keeping the keys it had), also when the file lacks a key that wraps a
        stored data key."""
        if self._key_file is None:
            raise KeyUnavailable("no master key file")
        if self._key_file.loaded() is None and not self._keys and not self._key_file.path.exists():
            return None
        master = self._key_file.read()
        missing = {key.master_key for key in self._keys.values()} - set(master.fingerprints)
        if missing:
            raise KeyUnavailable(
                f"the master key file {self._key_file.path} lacks {', '.join(sorted(missing))}, which still wrap stored "
                "data keys: keep the old keys in the file (after the new one) until they are re-wrapped"
            )
        self._key_file.use(master)
        return master

    def rewrap_records(self, at_ms: int) -> list[DataKeyRewrapped]:
        """A DataKeyRewrapped for every data key wrapped by a master key other than the current
        one, to commit; empty when there is none (or no key file was ever needed)."""
        master = self._key_file.loaded() if self._key_file is not None else None
        if master is None:
            return []
        return [
            DataKeyRewrapped(at_ms, key.key_id, key.alias, key.created_ms, master.current, master.wrap(key.secret, key.key_id, key.alias, key.created_ms))
            for key in list(self._keys.values())
            if key.master_key != master.current
        ]

    def retirement_candidates(self, now_ms: int, interval_ms: int = 60_000) -> list[DataKey]:
        """At most once an interval: the keys that are not their alias's newest, oldest first."""
        if now_ms < self._retire_check_at_ms:
            return []
        self._retire_check_at_ms = now_ms + interval_ms
        newest = {key.key_id for key in self._newest.values()}
        return sorted((key for key in self._keys.values() if key.key_id not in newest), key=lambda key: key.key_id)

    def retirable(self, candidates: Sequence[DataKey], oldest_stored_lsn: int, at_ms: int) -> list[DataKeyRetired]:
        """Of the candidates, those nothing stored can be sealed with: their successor (the next
        key of their alias) has an id at or below the oldest LSN stored anywhere."""
        by_alias: dict[str, list[int]] = {}
        for key in sorted(self._keys.values(), key=lambda key: key.key_id):
            by_alias.setdefault(key.alias, []).append(key.key_id)
        retired = []
        for key in candidates:
            ids = by_alias.get(key.alias, [])
            later = [key_id for key_id in ids if key_id > key.key_id]
            if later and later[0] <= oldest_stored_lsn:
                retired.append(DataKeyRetired(at_ms, key.key_id, key.alias))
        return retired


def _data_key(state: DataKeyState, secret: bytes) -> DataKey:
    return DataKey(state.key_id, state.alias, state.created_ms, state.master_key, state.wrapped, secret)


def _lsn_of_nonce(nonce: bytes) -> int | str:
    return _U64.unpack(nonce[NONCE_PREFIX_BYTES:])[0] if len(nonce) == NONCE_PREFIX_BYTES + 8 else "?"


def _newest_of(keys: Iterable[DataKey]) -> dict[str, DataKey]:
    newest: dict[str, DataKey] = {}
    for key in keys:
        if key.alias not in newest or key.key_id > newest[key.alias].key_id:
            newest[key.alias] = key
    return newest


