"""SNS subscriptions of protocol `lambda`: validated, confirmed at once, delivered as SNS's event
by an asynchronous invocation, retried on AWS's policy for its own endpoints, and dead-lettered at
once when the function does not exist (SNS's client-side error); on the autojump clock with a
stand-in function registry."""

import json

import pytest
import trio

from dovecote.actors.errors import BrokerError
from dovecote.actors.ops import (
    CreateQueue,
    CreateTopic,
    GetSubscriptionAttributes,
    MessageAttributeValue,
    Publish,
    ReceiveMessage,
    Subscribe,
)
from dovecote.actors.sns_messages import lambda_event
from dovecote.net.http_push import Pusher
from dovecote.storage.records import PushAttempted, PushDone

from ..conftest import running_broker

TOPIC = "arn:aws:sns:us-east-1:000000000000:"
QUEUE = "arn:aws:sqs:us-east-1:000000000000:"
FUNCTION = "arn:aws:lambda:us-east-1:000000000000:function:"


class StandInFunctions:
    def __init__(self, refuse=()):
        self.invoked: list[tuple[str, dict, bool]] = []
        self.refuse = list(refuse)  # BrokerErrors to raise, one per invocation, before succeeding

    async def invoke(self, function, payload, *, asynchronous=False, message_ids=()):
        if self.refuse:
            raise self.refuse.pop(0)
        self.invoked.append((function, json.loads(payload), asynchronous))
        assert list(message_ids) == [json.loads(payload)["Records"][0]["Sns"]["MessageId"]]


def pusher_for(functions):
    pusher = Pusher()
    pusher.serve_functions(functions)
    return pusher


def log_of(h, kind):
    return [record for _, record in h.store.read_log() if isinstance(record, kind)]


async def test_a_lambda_subscription_gets_snss_event(autojump_clock):
    functions = StandInFunctions()
    async with running_broker(pusher=pusher_for(functions)) as h:
        await h.ok(CreateTopic("t"))
        arn = (await h.ok(Subscribe("t", "lambda", FUNCTION + "f", return_subscription_arn=True))).arn
        attributes = (await h.ok(GetSubscriptionAttributes("t", arn))).attributes
        assert (attributes["PendingConfirmation"], attributes["Protocol"]) == ("false", "lambda")
        sent = await h.ok(Publish("t", "hello", subject="greeting",
                                  message_attributes={"colour": MessageAttributeValue("String", "red")}))
        await trio.sleep(1)
        ((function, event, asynchronous),) = functions.invoked
        assert (function, asynchronous) == (FUNCTION + "f", True)
        (record,) = event["Records"]
        assert list(record) == ["EventSource", "EventVersion", "EventSubscriptionArn", "Sns"]
        assert (record["EventSource"], record["EventVersion"], record["EventSubscriptionArn"]) == ("aws:sns", "1.0", arn)
        sns = record["Sns"]
        assert list(sns) == ["Type", "MessageId", "TopicArn", "Subject", "Message", "Timestamp", "SignatureVersion",
                             "Signature", "SigningCertUrl", "UnsubscribeUrl", "MessageAttributes"]
        assert (sns["Type"], sns["MessageId"], sns["TopicArn"], sns["Subject"], sns["Message"]) == (
            "Notification", sent.message_id, TOPIC + "t", "greeting", "hello")
        assert sns["MessageAttributes"] == {"colour": {"Type": "String", "Value": "red"}}
        assert sns["UnsubscribeUrl"].endswith(f"SubscriptionArn={arn}")
        assert [r.outcome for r in log_of(h, PushDone)] == ["delivered"]


def test_the_event_of_a_message_without_subject_or_attributes():
    envelope = json.dumps({"Type": "Notification", "MessageId": "m", "TopicArn": TOPIC + "t", "Message": "x",
                           "Timestamp": "2026-01-01T00:00:00.000Z", "SignatureVersion": "1", "Signature": "s",
                           "SigningCertURL": "https://c", "UnsubscribeURL": "https://u"})
    sns = json.loads(lambda_event(envelope, "sub"))["Records"][0]["Sns"]
    assert (sns["Subject"], sns["MessageAttributes"], sns["SigningCertUrl"], sns["UnsubscribeUrl"]) == (None, {}, "https://c", "https://u")


@pytest.mark.parametrize("endpoint", [
    "arn:aws:lambda:x", "https://example.com", FUNCTION, "arn:aws:sqs:us-east-1:000000000000:q",
    "arn:aws:lambda:local:000000000000:function:f",  # no AWS region: no invocation could ever name it
])
async def test_a_lambda_endpoint_must_be_a_function_arn(autojump_clock, endpoint):
    async with running_broker(pusher=pusher_for(StandInFunctions())) as h:
        await h.ok(CreateTopic("t"))
        with pytest.raises(BrokerError) as error:
            await h.ok(Subscribe("t", "lambda", endpoint))
        assert (error.value.code, error.value.message) == ("InvalidParameter", "Invalid parameter: Lambda endpoint ARN")


async def test_a_throttled_invocation_is_retried_at_once_as_aws_does_for_its_endpoints(autojump_clock):
    throttled = BrokerError("RequestThrottled", "busy")
    functions = StandInFunctions(refuse=[throttled, throttled])
    async with running_broker(pusher=pusher_for(functions)) as h:
        await h.ok(CreateTopic("t"))
        await h.ok(Subscribe("t", "lambda", FUNCTION + "f"))
        await h.ok(Publish("t", "m"))
        await trio.sleep(0.5)  # AWS's first three retries come without delay
        assert len(functions.invoked) == 1
        assert [r.attempt for r in log_of(h, PushAttempted)] == [1, 2]
        assert [(r.outcome, r.attempts) for r in log_of(h, PushDone)] == [("delivered", 3)]


async def test_a_raw_lambda_subscription_still_gets_snss_event(autojump_clock):
    """RawMessageDelivery means nothing to a function: its event carries the envelope's fields
    (before, the bare message was read as one and the topic's actor failed on it)."""
    functions = StandInFunctions()
    async with running_broker(pusher=pusher_for(functions)) as h:
        await h.ok(CreateTopic("t"))
        await h.ok(Subscribe("t", "lambda", FUNCTION + "f", {"RawMessageDelivery": "true"}))
        sent = await h.ok(Publish("t", "plain text"))
        await trio.sleep(1)
        ((_, event, _),) = functions.invoked
        sns = event["Records"][0]["Sns"]
        assert (sns["Type"], sns["MessageId"], sns["Message"]) == ("Notification", sent.message_id, "plain text")


@pytest.mark.parametrize("refusal", [
    BrokerError("ResourceNotFoundException", "Function not found"),
    BrokerError("InvalidParameterValueException", "a version other than $LATEST"),
])
async def test_a_missing_function_sends_the_message_to_the_dead_letter_queue_at_once(autojump_clock, refusal):
    functions = StandInFunctions(refuse=[refusal])
    async with running_broker(pusher=pusher_for(functions)) as h:
        await h.ok(CreateTopic("t"))
        await h.ok(CreateQueue("dlq"))
        redrive = json.dumps({"deadLetterTargetArn": QUEUE + "dlq"})
        await h.ok(Subscribe("t", "lambda", FUNCTION + "gone", {"RedrivePolicy": redrive}))
        await h.ok(Publish("t", "lost"))
        await trio.sleep(1)
        (dead,) = (await h.ok(ReceiveMessage("dlq"))).messages
        assert json.loads(dead.body)["Message"] == "lost"
        assert [(r.outcome, r.attempts) for r in log_of(h, PushDone)] == [("dead-lettered", 1)]
        assert functions.invoked == []
