"""Event source mappings' rules (actors/esm_core.py): the configuration Lambda accepts, the SQS
event it builds, its filter grammar, and what an invocation's outcome deletes."""

import base64
import json

import pytest

from dovecote.actors import esm_core
from dovecote.actors.errors import BrokerError
from dovecote.actors.esm_core import EventSourceMapping
from dovecote.actors.ops import MessageAttributeValue, ReceivedMessage

QUEUE = "arn:aws:sqs:eu-west-1:000000000000:orders"
FIFO_QUEUE = "arn:aws:sqs:eu-west-1:000000000000:orders.fifo"
FUNCTION = "arn:aws:lambda:eu-west-1:000000000000:function:handle"


def mapping(queue=QUEUE, **params):
    return esm_core.configure(EventSourceMapping(uuid="u-1", function_arn=FUNCTION, queue_arn=queue), params, 1_700_000_000_000)


def refused(queue=QUEUE, **params):
    with pytest.raises(BrokerError) as caught:
        mapping(queue, **params)
    assert caught.value.code == "InvalidParameterValueException"
    return caught.value.message


def message(message_id, body="{}", group="", attributes=None, **extra):
    system = {"ApproximateReceiveCount": "1", "SentTimestamp": "1700000000000", "SenderId": "000000000000",
              "ApproximateFirstReceiveTimestamp": "1700000000001"}
    if group:
        system.update(SequenceNumber="18880000000000000001", MessageGroupId=group, MessageDeduplicationId=f"d-{message_id}")
    return ReceivedMessage(message_id, f"handle-{message_id}", body, "md5", attributes=system,
                           message_attributes=attributes or {}, **extra)


# --- configuration ------------------------------------------------------------------------------------
def test_defaults_and_output_shape():
    answer = esm_core.output(mapping(), esm_core.CREATING)
    assert answer == {
        "UUID": "u-1", "BatchSize": 10, "MaximumBatchingWindowInSeconds": 0, "EventSourceArn": QUEUE,
        "FunctionArn": FUNCTION, "LastModified": 1_700_000_000.0, "State": "Creating",
        "StateTransitionReason": "USER_INITIATED", "FunctionResponseTypes": [],
        "EventSourceMappingArn": "arn:aws:lambda:eu-west-1:000000000000:event-source-mapping:u-1",
    }
    assert esm_core.output(mapping(Enabled=False))["State"] == "Disabled"
    assert mapping().concurrency == esm_core.DEFAULT_CONCURRENCY


def test_every_setting_is_kept_and_answered():
    configured = mapping(
        BatchSize=100, MaximumBatchingWindowInSeconds=2, FunctionResponseTypes=["ReportBatchItemFailures"],
        ScalingConfig={"MaximumConcurrency": 4}, FilterCriteria={"Filters": [{"Pattern": '{"body": {"kind": ["a"]}}'}]},
    )
    answer = esm_core.output(configured)
    assert (answer["BatchSize"], answer["MaximumBatchingWindowInSeconds"]) == (100, 2)
    assert answer["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert answer["ScalingConfig"] == {"MaximumConcurrency": 4}
    assert answer["FilterCriteria"] == {"Filters": [{"Pattern": '{"body": {"kind": ["a"]}}'}]}
    assert configured.concurrency == 4
    # an update keeps what it does not name, and clears what it empties
    updated = esm_core.configure(configured, {"FunctionResponseTypes": [], "FilterCriteria": {}}, 1)
    assert (updated.batch_size, updated.report_item_failures, updated.filter_patterns) == (100, False, ())


@pytest.mark.parametrize("params, words", [
    ({"BatchSize": 0}, "between 1 and 10000"),
    ({"BatchSize": 10_001, "MaximumBatchingWindowInSeconds": 1}, "between 1 and 10000"),
    ({"BatchSize": 11}, "greater than 0 if maximum batch size is greater than 10"),
    ({"BatchSize": "10"}, "must be an integer"),
    ({"MaximumBatchingWindowInSeconds": 301}, "between 0 and 300"),
    ({"ScalingConfig": {"MaximumConcurrency": 1}}, "between 2 and 1000"),
    ({"ScalingConfig": {"MaximumConcurrency": 1001}}, "between 2 and 1000"),
    ({"FunctionResponseTypes": ["Other"]}, "ReportBatchItemFailures"),
    ({"Enabled": "yes"}, "true or false"),
    ({"FilterCriteria": {"Filters": [{"Pattern": "not json"}]}}, "Invalid filter pattern definition"),
    ({"FilterCriteria": {"Filters": [{"Pattern": '{"body": "a"}'}]}}, "Invalid filter pattern definition"),
    ({"FilterCriteria": {"Filters": [{"Pattern": "{}"}] * 6}}, "at most 5 filters"),
])
def test_refusals(params, words):
    assert words in refused(**params)


def test_fifo_limits():
    assert "between 1 and 10 " in refused(FIFO_QUEUE, BatchSize=11)
    assert "not supported for FIFO" in refused(FIFO_QUEUE, MaximumBatchingWindowInSeconds=1)
    assert mapping(FIFO_QUEUE, BatchSize=10).fifo


def test_parameters_of_other_event_sources_are_refused():
    with pytest.raises(BrokerError, match="StartingPosition"):
        esm_core.check_parameters({"EventSourceArn": QUEUE, "FunctionName": "f", "StartingPosition": "LATEST"}, creating=True)
    with pytest.raises(BrokerError, match="Unknown parameter EventSourceArn"):
        esm_core.check_parameters({"EventSourceArn": QUEUE}, creating=False)
    with pytest.raises(BrokerError, match="SQS queue ARN"):
        esm_core.queue_arn_parts("arn:aws:kinesis:eu-west-1:000000000000:stream/s")


def test_duplicate_names_the_existing_mapping():
    error = esm_core.duplicate(mapping())
    assert (error.code, error.kind.http_status) == ("ResourceConflictException", 409)
    assert "UUID u-1" in error.message and QUEUE in error.message


# --- the event ----------------------------------------------------------------------------------------
def test_standard_record_is_lambdas():
    attributes = {
        "colour": MessageAttributeValue("String", "red"),
        "blob": MessageAttributeValue("Binary", binary_value=b"\x00\x01"),
    }
    record = esm_core.sqs_record(message("m1", "hello", attributes=attributes, md5_of_message_attributes="amd5"),
                                 QUEUE, "eu-west-1", fifo=False)
    assert list(record) == ["messageId", "receiptHandle", "body", "attributes", "messageAttributes", "md5OfBody",
                            "md5OfMessageAttributes", "eventSource", "eventSourceARN", "awsRegion"]
    assert list(record["attributes"]) == ["ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"]
    assert record["messageAttributes"] == {
        "colour": {"stringValue": "red", "stringListValues": [], "binaryListValues": [], "dataType": "String"},
        "blob": {"binaryValue": base64.b64encode(b"\x00\x01").decode(), "stringListValues": [], "binaryListValues": [],
                 "dataType": "Binary"},
    }
    assert (record["eventSource"], record["eventSourceARN"], record["awsRegion"]) == ("aws:sqs", QUEUE, "eu-west-1")
    assert (record["messageId"], record["receiptHandle"], record["body"], record["md5OfBody"]) == ("m1", "handle-m1", "hello", "md5")


def test_fifo_record_carries_the_group_and_sequence():
    record = esm_core.sqs_record(message("m1", group="g"), FIFO_QUEUE, "eu-west-1", fifo=True)
    assert list(record["attributes"]) == [
        "ApproximateReceiveCount", "SentTimestamp", "SequenceNumber", "MessageGroupId", "SenderId",
        "MessageDeduplicationId", "ApproximateFirstReceiveTimestamp",
    ]
    assert "md5OfMessageAttributes" not in record
    payload = json.loads(esm_core.event_payload([record]))
    assert payload == {"Records": [record]}


# --- filters ------------------------------------------------------------------------------------------
def _kept(pattern, record_message):
    filters = [esm_core.compile_filter(pattern)]
    return esm_core.kept_by_filters(filters, esm_core.sqs_record(record_message, QUEUE, "eu-west-1", False))


@pytest.mark.parametrize("pattern, body, kept", [
    ('{"body": {"kind": ["order"]}}', '{"kind": "order"}', True),
    ('{"body": {"kind": ["order"]}}', '{"kind": "refund"}', False),
    ('{"body": {"kind": ["order"]}}', "kind order", False),  # a JSON pattern on a plain body: dropped
    ('{"body": ["plain text"]}', "plain text", True),  # a plain pattern on a plain body
    ('{"body": {"amount": [{"numeric": [">", 10]}]}}', '{"amount": 12.5}', True),
    ('{"body": {"amount": [{"numeric": [">", 10]}]}}', '{"amount": 3}', False),
    ('{"body": {"customer": {"tier": [{"prefix": "gold"}]}}}', '{"customer": {"tier": "gold-plus"}}', True),
    ('{"body": {"note": [{"exists": false}]}}', '{"other": 1}', True),
    ('{"attributes": {"ApproximateReceiveCount": ["1"]}}', "x", True),
    ('{"attributes": {"ApproximateReceiveCount": ["2"]}}', "x", False),
    ('{}', "anything", True),
])
def test_filter_grammar(pattern, body, kept):
    assert _kept(pattern, message("m", body)) is kept


def test_filters_on_message_attributes_in_lambdas_shape():
    colour = {"colour": MessageAttributeValue("String", "red")}
    assert _kept('{"messageAttributes": {"colour": {"stringValue": ["red"]}}}', message("m", attributes=colour))
    assert not _kept('{"messageAttributes": {"colour": {"stringValue": ["blue"]}}}', message("m", attributes=colour))


def test_any_filter_keeps_a_message_and_no_filter_keeps_all():
    filters = [esm_core.compile_filter('{"body": {"a": [1]}}'), esm_core.compile_filter('{"body": {"b": [2]}}')]
    record = esm_core.sqs_record(message("m", '{"b": 2}'), QUEUE, "eu-west-1", False)
    assert esm_core.kept_by_filters(filters, record)
    assert not esm_core.kept_by_filters(filters[:1], record)
    assert esm_core.kept_by_filters([], record)


def test_lambda_patterns_are_not_bound_by_sns_key_limits():
    """SNS allows five keys in a policy; Lambda bounds a pattern by its length only."""
    pattern = json.dumps({"body": {f"k{i}": [str(i)] for i in range(7)}})
    document = json.dumps({f"k{i}": str(i) for i in range(7)})
    assert _kept(pattern, message("m", document))


# --- after the invocation -----------------------------------------------------------------------------
BATCH = [message("a"), message("b"), message("c")]


def _deleted(answer, *, failed=False, report=True, fifo=False, batch=BATCH):
    return [m.message_id for m in esm_core.to_delete(batch, function_failed=failed, answer=answer,
                                                      report_item_failures=report, fifo=fifo)]


def test_success_deletes_the_batch_and_failure_nothing():
    assert _deleted(b"whatever", report=False) == ["a", "b", "c"]
    assert _deleted(b"{}", failed=True) == []
    assert _deleted(b"{}", failed=True, report=False) == []


@pytest.mark.parametrize("answer", [b"", b"null", b"{}", b"[]", b'{"batchItemFailures": []}', b'{"batchItemFailures": null}'])
def test_answers_of_full_success(answer):
    assert _deleted(answer) == ["a", "b", "c"]


@pytest.mark.parametrize("answer", [
    b"not json",
    b'"text"',
    b'{"batchItemFailures": "b"}',
    b'{"batchItemFailures": [{"itemIdentifier": ""}]}',
    b'{"batchItemFailures": [{"itemIdentifier": null}]}',
    b'{"batchItemFailures": [{"id": "b"}]}',
    b'{"batchItemFailures": [{"itemIdentifier": "not-in-batch"}]}',
])
def test_answers_that_fail_the_whole_batch(answer):
    assert _deleted(answer) == []


def test_partial_failure_deletes_the_others():
    assert _deleted(b'{"batchItemFailures": [{"itemIdentifier": "b"}]}') == ["a", "c"]


def test_fifo_failure_keeps_the_rest_of_its_group():
    batch = [message("a", group="g1"), message("b", group="g2"), message("c", group="g1"), message("d", group="g2")]
    answer = b'{"batchItemFailures": [{"itemIdentifier": "a"}]}'
    assert _deleted(answer, fifo=True, batch=batch) == ["b", "d"]
    assert _deleted(answer, fifo=False, batch=batch) == ["b", "c", "d"]


def test_records_that_fit_cut_a_batch_where_its_event_would_pass_the_limit():
    records = [{"body": "x" * 100}, {"body": "y" * 100}, {"body": "z" * 100}]
    two = len(esm_core.event_payload(records[:2]))
    assert esm_core.records_that_fit(records, limit=two) == 2
    assert esm_core.records_that_fit(records, limit=two - 1) == 1
    assert esm_core.records_that_fit(records, limit=len(esm_core.event_payload(records))) == 3
    assert esm_core.records_that_fit(records[:1], limit=10) == 1  # one is always carried
