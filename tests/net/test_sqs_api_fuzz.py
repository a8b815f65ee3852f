"""Whatever a client sends, the AWS translation layer answers with an operation or a BrokerError
(rendered in the protocol's shape); no other exception may escape it."""

import os

from hypothesis import given, settings, strategies as st

from dovecote.actors.errors import BrokerError
from dovecote.actors.ops import Op
from dovecote.net import sns_api, sqs_api, sqs_query

CONTEXT = sqs_api.Context("000000000000", "http://localhost:7481")
ACTIONS = sorted(sqs_api._REQUESTS) + ["LaunchRocket", ""]
MEMBERS = ["QueueUrl", "QueueName", "Attributes", "MessageBody", "Entries", "Id", "ReceiptHandle",
           "MaxNumberOfMessages", "VisibilityTimeout", "MessageAttributes", "DataType", "StringValue",
           "BinaryValue", "Tags", "TagKeys", "Label", "AWSAccountIds", "Actions", "tags", "AttributeNames"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(MEMBERS) | st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def translate(action, params):
    try:
        assert isinstance(sqs_api.to_op(action, params, CONTEXT), Op)
    except BrokerError:
        pass


@settings(max_examples=int(os.environ.get("DOVECOTE_FUZZ_EXAMPLES", "400")), deadline=None)
@given(st.sampled_from(ACTIONS), st.dictionaries(st.sampled_from(MEMBERS), json_values, max_size=6))
def test_random_json_parameters(action, params):
    translate(action, params)


flattened_keys = st.lists(
    st.sampled_from(["Attribute", "MessageAttribute", "SendMessageBatchRequestEntry", "AttributeName", "Tag",
                     "Value", "Name", "Key", "1", "2", "10", "x", "", "StringValue", "DataType", "Id", "MessageBody",
                     "QueueUrl", "TagKey", "ActionName", "AWSAccountId"]),
    min_size=1, max_size=5,
).map(".".join)


@settings(max_examples=int(os.environ.get("DOVECOTE_FUZZ_EXAMPLES", "400")), deadline=None)
@given(st.sampled_from(ACTIONS), st.lists(st.tuples(flattened_keys, st.text(max_size=12)), max_size=8))
def test_random_query_parameters(action, pairs):
    try:
        pairs = [("Action", action), *pairs]
        assert sqs_query.query_action(pairs) == action
        params = sqs_query.nest(action, pairs)
    except BrokerError as error:
        assert error.code in ("InvalidParameterValue", "MalformedQueryString")
        return
    translate(action, params)


SNS_ACTIONS = sorted(sns_api._REQUESTS) + ["CreatePlatformApplication", ""]
sns_keys = st.lists(
    st.sampled_from(["TopicArn", "SubscriptionArn", "ResourceArn", "Name", "Message", "Subject", "Protocol",
                     "Endpoint", "Attributes", "MessageAttributes", "PublishBatchRequestEntries", "Tags", "TagKeys",
                     "entry", "member", "key", "value", "Name", "Value", "DataType", "StringValue", "Id",
                     "AttributeName", "AttributeValue", "1", "2", "x", ""]),
    min_size=1, max_size=5,
).map(".".join)
sns_values = st.sampled_from(["arn:aws:sns:us-east-1:000000000000:t", "arn:aws:sns:us-east-1:000000000000:t:sub",
                              "arn:aws:sqs:us-east-1:000000000000:q", "sqs", "String", "true", "{}", ""]) | st.text(max_size=12)


@settings(max_examples=int(os.environ.get("DOVECOTE_FUZZ_EXAMPLES", "400")), deadline=None)
@given(st.sampled_from(SNS_ACTIONS), st.lists(st.tuples(sns_keys, sns_values), max_size=8))
def test_random_sns_query_parameters(action, pairs):
    """SNS's Query translation: an operation or a BrokerError, nothing else."""
    try:
        params = sns_api.nest([("Action", action), *pairs])
        assert isinstance(sns_api.to_op(action, params), Op)
    except BrokerError as error:
        assert error.kind.sender_fault, error
