"""The formats this version speaks and writes, held to golden vectors (tests/vectors): every native
protocol operation and result, and every stored record kind, encodes to the committed bytes and
decodes from them. A format change fails here until it is made a version step."""

import json

import msgspec
import pytest

from dovecote.actors import ops
from dovecote.net import frames
from dovecote.storage import records
from dovecote.storage.framing import frame, unframe
from dovecote.storage.lmdb_store import LmdbStore
from dovecote.storage.memory_store import MemoryStore
from dovecote.storage.store import FORMAT_VERSION, FormatTooNew
from dovecote.storage.tables import FORMAT_VERSION_KEY, META, Put

from .vectors import make
from .vectors.examples import OPERATIONS, RECORDS, RESULTS, kinds

PROTOCOL = json.loads(make.protocol_path().read_text())
PROTOCOL_V1 = json.loads(make.protocol_path(1).read_text())
STORED = json.loads(make.records_path().read_text())
STORED_V1 = json.loads(make.records_path(1).read_text())
STORED_V2 = json.loads(make.records_path(2).read_text())
STORED_V3 = json.loads(make.records_path(3).read_text())
FORMAT_4_KINDS = {  # Lambda functions and event source mappings
    "FunctionChanged", "FunctionCodeStored", "FunctionDeleted", "FunctionEventQueued", "FunctionInvoked", "EventSourceMappingChanged",
    "EventSourceMappingDeleted",
}
FORMAT_3_KINDS = {  # the shovels', SNS's platform applications and endpoints the account's SMS attributes and sandbox
    "MessageForwarded", "PlatformApplicationChanged", "PlatformApplicationDeleted", "PlatformEndpointChanged", "PlatformEndpointDeleted",
    "SMSAttributesChanged", "SMSSandboxNumberChanged", "SMSSandboxNumberDeleted",
}
FORMAT_2_KINDS = {"DataKeyCreated", "DataKeyRewrapped", "DataKeyRetired"}  # encryption at rest
SMS_ACCOUNT_OPERATIONS = {
    "CheckIfPhoneNumberIsOptedOut", "ListPhoneNumbersOptedOut", "OptInPhoneNumber", "GetSMSSandboxAccountStatus", "ListOriginationNumbers",
}
PLATFORM_OPERATIONS = {
    "CreatePlatformApplication", "GetPlatformApplicationAttributes", "SetPlatformApplicationAttributes", "ListPlatformApplications",
    "DeletePlatformApplication", "CreatePlatformEndpoint", "GetEndpointAttributes", "SetEndpointAttributes", "DeleteEndpoint",
    "ListEndpointsByPlatformApplication", "PublishToEndpoint", "GetSMSAttributes", "SetSMSAttributes", "PublishToPhoneNumber",
    "CreateSMSSandboxPhoneNumber", "VerifySMSSandboxPhoneNumber", "DeleteSMSSandboxPhoneNumber", "ListSMSSandboxPhoneNumbers",
}
FORMAT_2_FIELDS = {"sealed"}  # appended, with defaults, to MessageSent, Published and PushQueued


def tags(union: object) -> set[str]:
    return {cls.__struct_config__.tag for cls in kinds(union)}


def test_every_kind_has_a_vector_and_every_vector_a_kind():
    assert set(PROTOCOL["requests"]) == tags(ops.AnyOp)
    assert set(PROTOCOL["responses"]) == tags(ops.AnyResult)
    assert set(STORED) == tags(records.AnyRecord)


def test_every_kind_names_its_tag_explicitly_and_tags_are_distinct():
    """Tags are written in each class statement (`tag="..."`), never left to msgspec to take
    from the class name, so renaming a class cannot change what is on the wire or on disk."""
    import inspect

    for union in (ops.AnyOp, ops.AnyResult, records.AnyRecord):
        classes = kinds(union)
        for cls in classes:
            assert f'tag="{cls.__struct_config__.tag}"' in inspect.getsource(cls).splitlines()[0], cls.__name__
        assert len({cls.__struct_config__.tag for cls in classes}) == len(classes)


@pytest.mark.parametrize("tag", sorted(OPERATIONS))
def test_operation_frames_match_their_vectors(tag):
    golden = bytes.fromhex(PROTOCOL["requests"][tag])
    assert make.request_frame(OPERATIONS[tag]) == golden
    decoder = frames.FrameDecoder(len(golden))
    decoder.feed(golden)
    envelope = frames.decode_envelope(decoder.next_payload())
    assert (envelope.id, frames.decode_op(envelope.op)) == (make.REQUEST_ID, OPERATIONS[tag])


@pytest.mark.parametrize("tag", sorted(RESULTS))
def test_result_frames_match_their_vectors(tag):
    golden = bytes.fromhex(PROTOCOL["responses"][tag])
    assert make.response_frame(RESULTS[tag]) == golden
    response = frames.decode_response(golden[4:])
    assert (response.id, response.result) == (make.REQUEST_ID, RESULTS[tag])


def test_version_2_changed_the_opening_only():
    """Operations and results are the same bytes in versions 1 and 2, so a broker without keys
    serves version 1 clients as before; version 2 only added kinds (the SMS account calls, the
    platform applications and endpoints)."""
    for section in ("requests", "responses"):
        assert {tag: PROTOCOL[section][tag] for tag in PROTOCOL_V1[section]} == PROTOCOL_V1[section]
    assert set(PROTOCOL["requests"]) - set(PROTOCOL_V1["requests"]) == SMS_ACCOUNT_OPERATIONS | PLATFORM_OPERATIONS
    assert set(PROTOCOL["responses"]) - set(PROTOCOL_V1["responses"]) == {
        "OptedOut", "PhoneNumbers", "SandboxStatus", "PlatformResources", "SandboxPhoneNumbers",
    }


def test_new_operations_join_the_protocol_version_but_a_changed_frame_does_not():
    committed = {"requests": {"Old": "00"}, "responses": {}}
    assert make.added_operations(committed, {"requests": {"Old": "00", "New": "01"}, "responses": {}}) == {
        "requests": {"Old": "00", "New": "01"}, "responses": {},
    }
    assert make.added_operations(committed, {"requests": {"Old": "ff", "New": "01"}, "responses": {}}) is None


def test_the_opening_matches_its_vectors():
    import hashlib
    import hmac

    golden = {name: bytes.fromhex(value) for name, value in PROTOCOL["handshake"].items()}
    assert make.handshake_vectors() == PROTOCOL["handshake"]
    assert frames.parse_hello(golden["hello"]) == 2
    assert frames.parse_welcome(golden["welcome"]) == (2, frames.STATUS_OK)
    assert frames.decode_challenge(golden["challenge"][4:]).nonce == make.HANDSHAKE_NONCE
    key_id, secret = make.HANDSHAKE_KEY
    authenticate = frames.decode_authenticate(golden["authenticate"][4:])
    # The proof, spelled out: HMAC-SHA256 under the secret over the label, the nonce and the key id.
    message = b"DVCT v2 key proof\x00" + make.HANDSHAKE_NONCE + key_id.encode()
    assert authenticate == frames.Authenticate(key_id, hmac.new(secret.encode(), message, hashlib.sha256).digest())
    assert frames.decode_authenticate(golden["authenticate_without_key"][4:]) == frames.Authenticate()
    assert frames.decode_handshake_answer(golden["authenticated"][4:]) == frames.Authenticated(key_id)
    assert frames.decode_handshake_answer(golden["refused"][4:]) == ops.Failure("SignatureDoesNotMatch", "message-value")


@pytest.mark.parametrize("tag", sorted(RECORDS))
def test_stored_records_match_their_vectors(tag):
    golden = bytes.fromhex(STORED[tag])
    assert make.stored_value(RECORDS[tag]) == golden
    assert records.decode_record(unframe(golden)) == RECORDS[tag]


@pytest.mark.parametrize("tag", sorted(STORED_V1))
def test_format_1_records_still_decode(tag):
    """What format 1 stored reads as the same record, with format 2's fields at their defaults."""
    example = RECORDS[tag]
    defaults = {field.name: field.default for field in msgspec.structs.fields(type(example)) if field.name in FORMAT_2_FIELDS}
    assert records.decode_record(unframe(bytes.fromhex(STORED_V1[tag]))) == msgspec.structs.replace(example, **defaults)


def test_format_4_adds_the_function_and_event_source_mapping_records_only():
    assert set(STORED) - set(STORED_V3) == FORMAT_4_KINDS
    assert all(STORED[tag] == STORED_V3[tag] for tag in STORED_V3)


def test_format_3_adds_the_shovels_records_only():
    assert set(STORED_V3) - set(STORED_V2) == FORMAT_3_KINDS
    assert all(STORED_V3[tag] == STORED_V2[tag] for tag in STORED_V2)


def test_format_2_adds_the_data_key_records_and_sealed_contents_only():
    assert set(STORED_V2) - set(STORED_V1) == FORMAT_2_KINDS
    changed = {tag for tag in STORED_V1 if STORED_V2[tag] != STORED_V1[tag]}
    assert changed == {"MessageSent", "Published", "PushQueued"}
    for tag in changed:
        assert {field.name for field in msgspec.structs.fields(type(RECORDS[tag]))}.issuperset(FORMAT_2_FIELDS)
    # the heads recovery decodes are read from either format
    for vectors in (STORED, STORED_V2, STORED_V1):
        assert records.decode_message_head(unframe(bytes.fromhex(vectors["MessageSent"]))).seq == RECORDS["MessageSent"].seq
        assert records.decode_push_head(unframe(bytes.fromhex(vectors["PushQueued"]))).seq == RECORDS["PushQueued"].seq


def test_a_changed_field_is_caught():
    """The check is not vacuous: a record with one field more encodes to other bytes."""
    import msgspec

    class QueueDeleted(records.Record, tag="QueueDeleted"):
        queue_id: int
        queue: str
        reason: str = ""  # a field a careless change might add

    original = RECORDS["QueueDeleted"]
    changed = QueueDeleted(original.at_ms, original.queue_id, original.queue, "why")
    assert msgspec.msgpack.encode(changed) != msgspec.msgpack.encode(original)


def test_a_store_records_its_format_and_refuses_a_newer_one(tmp_path):
    store = LmdbStore(tmp_path / "data")
    assert store.format_version == FORMAT_VERSION
    store._apply([], [Put(META, FORMAT_VERSION_KEY, frame((FORMAT_VERSION + 1).to_bytes(8, "big")))])
    store.close()
    with pytest.raises(FormatTooNew) as caught:
        LmdbStore(tmp_path / "data")
    assert f"format {FORMAT_VERSION + 1}" in str(caught.value)
    with pytest.raises(FormatTooNew):
        LmdbStore(tmp_path / "data", readonly=True)


def test_a_store_from_before_formats_were_recorded_reads_as_format_1():
    store = MemoryStore()
    store._tables[META].clear()  # as every data directory written before the format key
    assert store.check_format(writable=False) == 1
    # opened for writing, it is this version's format from now on: format 1 code would misread it
    assert store.check_format(writable=True) == FORMAT_VERSION
    assert store.check_format(writable=False) == FORMAT_VERSION
