"""Pure validation and checksums, against values published by other SQS implementations."""

import pytest

from dovecote.actors.errors import BrokerError
from dovecote.actors.sqs_results import md5_of_body, md5_of_message_attributes
from dovecote.actors.validation import (
    validate_batch,
    validate_message,
    validate_queue_attributes,
    validate_queue_name,
)
from dovecote.storage.records import MessageAttribute as A


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"ordinal": A("Number", "1"), "category": A("String", "test")}, "d21ae90c49061e927f57df5f5d72be1f"),
        ({"SellerName": A("String", "Example Store")}, "cd28f3b68aeee4b2eac9c66f2f694b58"),
        ({"timestamp": A("Number", "1493147359900")}, "235c5c510d26fb653d073faed50ae77c"),
    ],
)
def test_md5_of_message_attributes_matches_published_vectors(attributes, expected):
    assert md5_of_message_attributes(attributes) == expected


def test_md5_of_message_attributes_distinguishes_binary_from_string():
    assert md5_of_message_attributes({"a": A("Binary", binary_value=b"x")}) != md5_of_message_attributes(
        {"a": A("String", "x")}
    )
    assert md5_of_message_attributes({}) is None


def test_md5_of_body():
    assert md5_of_body("hello") == "5d41402abc4b2a76b9719d911017c592"


@pytest.mark.parametrize("name", ["orders", "a", "A-b_c", "x" * 80])
def test_valid_queue_names(name):
    validate_queue_name(name)


@pytest.mark.parametrize("name", ["", "x" * 81, "has space", "dot.name", "slash/name", "ü"])
def test_invalid_queue_names(name):
    with pytest.raises(BrokerError) as caught:
        validate_queue_name(name)
    assert caught.value.code == "InvalidParameterValue"


@pytest.mark.parametrize(
    ("attributes", "code"),
    [
        ({"VisibilityTimeout": "43201"}, "InvalidAttributeValue"),
        ({"VisibilityTimeout": "-1"}, "InvalidAttributeValue"),
        ({"DelaySeconds": "901"}, "InvalidAttributeValue"),
        ({"MaximumMessageSize": "1023"}, "InvalidAttributeValue"),
        ({"MaximumMessageSize": "1048577"}, "InvalidAttributeValue"),
        ({"MessageRetentionPeriod": "59"}, "InvalidAttributeValue"),
        ({"MessageRetentionPeriod": "1209601"}, "InvalidAttributeValue"),
        ({"ReceiveMessageWaitTimeSeconds": "21"}, "InvalidAttributeValue"),
        ({"VisibilityTimeout": "ten"}, "InvalidAttributeValue"),
        ({"Colour": "blue"}, "InvalidAttributeName"),
        ({"QueueArn": "arn"}, "InvalidAttributeName"),
    ],
)
def test_queue_attribute_limits(attributes, code):
    with pytest.raises(BrokerError) as caught:
        validate_queue_attributes(attributes)
    assert caught.value.code == code


def test_queue_attributes_are_normalised():
    assert validate_queue_attributes({"VisibilityTimeout": " 060 ", "SqsManagedSseEnabled": "TRUE"}) == {
        "VisibilityTimeout": "60",
        "SqsManagedSseEnabled": "true",
    }


@pytest.mark.parametrize(
    ("body", "attributes", "code"),
    [
        ("", {}, "MissingParameter"),
        ("bad \x00 char", {}, "InvalidParameterValue"),
        ("bad \ufffe char", {}, "InvalidParameterValue"),
        ("x" * 1025, {}, "InvalidParameterValue"),
        ("ok", {"AWS.reserved": A("String", "v")}, "InvalidParameterValue"),
        ("ok", {"a..b": A("String", "v")}, "InvalidParameterValue"),
        ("ok", {".a": A("String", "v")}, "InvalidParameterValue"),
        ("ok", {"a": A("Strung", "v")}, "InvalidParameterValue"),
        ("ok", {"a": A("String", "")}, "InvalidParameterValue"),
        ("ok", {"a": A("Number", "12x")}, "InvalidParameterValue"),
        ("ok", {"a": A("Number", "1" * 39)}, "InvalidParameterValue"),
        ("ok", {"a": A("Binary")}, "InvalidParameterValue"),
        ("ok", {f"a{i}": A("String", "v") for i in range(11)}, "InvalidParameterValue"),
        ("x" * 1000, {"big": A("String", "y" * 30)}, "InvalidParameterValue"),
    ],
)
def test_message_validation(body, attributes, code):
    with pytest.raises(BrokerError) as caught:
        validate_message(body, attributes, 1024)
    assert caught.value.code == code


def test_valid_message_with_every_attribute_type():
    validate_message(
        "tab\tnewline\nemoji \U0001f426",
        {
            "s": A("String", "v"),
            "n": A("Number.float", "-12.5e3"),
            "b": A("Binary.gif", binary_value=b"\x00\x01"),
        },
        1024,
    )


@pytest.mark.parametrize(
    ("ids", "code"),
    [
        ([], "EmptyBatchRequest"),
        ([str(i) for i in range(11)], "TooManyEntriesInBatchRequest"),
        (["a", "a"], "BatchEntryIdsNotDistinct"),
        (["bad id"], "InvalidBatchEntryId"),
    ],
)
def test_batch_rules(ids, code):
    with pytest.raises(BrokerError) as caught:
        validate_batch("SendMessageBatch", ids)
    assert caught.value.code == code


def test_message_ids_are_unique_and_uuid_shaped_and_round_trip_through_handles():
    import uuid

    from dovecote.actors.ids import MessageIds, ReceiptHandle, decode_receipt_handle, encode_receipt_handle

    ids = MessageIds()
    made = [ids.new() for _ in range(10_000)] + [MessageIds().new() for _ in range(100)]
    assert len(set(made)) == len(made)
    for message_id in made[:100]:
        assert str(uuid.UUID(message_id)) == message_id
        handle = ReceiptHandle(3, 99, 2, message_id)
        assert decode_receipt_handle(encode_receipt_handle(handle)) == handle
