"""SMS and mobile push subscriptions (protocols sms and application): validated as AWS validates
them, confirmed at once, and delivered through the operator's sink with the retries and dead
letters of HTTP pushes, on the autojump clock. The command sink runs real processes, so its tests
use the real clock."""

import json
import stat
import tracemalloc

import msgspec
import pytest
import trio

from dovecote.actors import mobile
from dovecote.actors.errors import BrokerError
from dovecote.actors.ops import (
    CheckIfPhoneNumberIsOptedOut,
    CreatePlatformApplication,
    CreatePlatformEndpoint,
    CreateQueue,
    CreateTopic,
    Done,
    GetSMSSandboxAccountStatus,
    GetSubscriptionAttributes,
    ListOriginationNumbers,
    ListPhoneNumbersOptedOut,
    OptedOut,
    OptInPhoneNumber,
    PhoneNumbers,
    SandboxStatus,
    Publish,
    ReceiveMessage,
    SetSubscriptionAttributes,
    Subscribe,
    Unsubscribe,
    UnsubscribeByUrl,
)
from dovecote.actors.push_types import PushRequest
from dovecote.net.http_push import Pusher
from dovecote.net.mobile_sink import MobileSink, run_command
from dovecote.storage.records import PushDone

from ..conftest import running_broker
from ..push_endpoint import trio_endpoint
from .test_access import allow, call, key, refused

TOPIC = "arn:aws:sns:us-east-1:000000000000:"
QUEUE = "arn:aws:sqs:us-east-1:000000000000:"
ENDPOINT = "arn:aws:sns:us-east-1:000000000000:endpoint/GCM/my-app/4b5c6d7e-0000-4000-8000-000000000001"


def log_of(h, kind):
    return [record for _, record in h.store.read_log() if isinstance(record, kind)]


def webhook(url: str) -> Pusher:
    return Pusher(sink=MobileSink(url=url))


@pytest.mark.parametrize("number", ["+15555550100", "15555550100", "+1-555-555-0100", "+44.20.7946.0018", "+1/555/5550100"])
def test_phone_numbers_in_e164_are_accepted_with_single_separators(number):
    assert mobile.is_phone_number(number)


@pytest.mark.parametrize(
    "number",
    # moto's recordings of AWS's refusals, and numbers E.164 cannot have (too long, a leading 0)
    ["NAA+15551234567", "+15--551234567", "+15551234567.", "/+15551234567", "+0155555501", "+1234567890123456", "+", ""],
)
def test_sms_subscription_refuses_a_number_not_in_e164(number):
    assert not mobile.is_phone_number(number)


async def test_the_account_s_sms_state_is_out_of_the_sandbox_with_nothing_opted_out(autojump_clock):
    async with running_broker() as h:
        assert await h.ok(CheckIfPhoneNumberIsOptedOut("+15555550100")) == OptedOut(False)
        assert await h.ok(OptInPhoneNumber("+1-555-555-0100")) == Done()
        assert await h.ok(ListPhoneNumbersOptedOut()) == PhoneNumbers([])
        assert await h.ok(ListOriginationNumbers()) == PhoneNumbers([])
        assert await h.ok(GetSMSSandboxAccountStatus()) == SandboxStatus(False)


@pytest.mark.parametrize(
    "op, words",
    [
        (CheckIfPhoneNumberIsOptedOut("555-CALL-NOW"), "Invalid parameter: PhoneNumber Reason: input incorrectly formatted"),
        (OptInPhoneNumber("+15--551234567"), "Invalid parameter: PhoneNumber Reason: input incorrectly formatted"),
        (ListPhoneNumbersOptedOut("page-2"), "Invalid parameter: NextToken Reason: no such page"),
        (ListOriginationNumbers("page-2"), "Invalid parameter: NextToken Reason: no such page"),
    ],
)
async def test_the_sms_account_calls_refuse_a_bad_number_or_page_as_aws_words_it(autojump_clock, op, words):
    async with running_broker() as h:
        with pytest.raises(BrokerError) as error:
            await h.ok(op)
        assert (error.value.code, error.value.message) == ("InvalidParameter", words)


async def test_the_sms_account_calls_are_authorised_by_their_own_actions(autojump_clock):
    checker = key("checker", allow("sns:CheckIfPhoneNumberIsOptedOut"))
    async with running_broker() as h:
        assert await call(h, checker, CheckIfPhoneNumberIsOptedOut("+15555550100")) == OptedOut(False)
        failure = await refused(h, checker, OptInPhoneNumber("+15555550100"))
        assert failure.code == "AuthorizationError" and "sns:OptInPhoneNumber" in failure.message


async def test_sms_subscription_refuses_an_invalid_number_as_aws_words_it(autojump_clock):
    async with trio_endpoint() as endpoint, running_broker(pusher=webhook(endpoint.url)) as h:
        await h.ok(CreateTopic("t"))
        with pytest.raises(BrokerError) as error:
            await h.ok(Subscribe("t", "sms", "+15--551234567"))
        assert (error.value.code, error.value.message) == ("InvalidParameter", "Invalid SMS endpoint: +15--551234567")
        with pytest.raises(BrokerError) as error:
            await h.ok(Subscribe("t", "application", "arn:aws:sns:us-east-1:000000000000:t"))
        assert error.value.code == "InvalidParameter" and "platform endpoint" in error.value.message


async def test_sms_and_application_subscriptions_without_a_sink_are_refused_naming_the_setting(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateTopic("t"))
        for protocol, endpoint in [("sms", "+15555550100"), ("application", ENDPOINT)]:
            with pytest.raises(BrokerError) as error:
                await h.ok(Subscribe("t", protocol, endpoint))
            assert error.value.code == "InvalidParameter"
            assert "mobile_sink_url or mobile_sink_command" in error.value.message


async def test_sms_subscription_on_a_fifo_topic_is_refused(autojump_clock):
    async with trio_endpoint() as endpoint, running_broker(pusher=webhook(endpoint.url)) as h:
        await h.ok(CreateTopic("t.fifo", {"FifoTopic": "true"}))
        with pytest.raises(BrokerError) as error:
            await h.ok(Subscribe("t.fifo", "sms", "+15555550100"))
        assert error.value.code == "InvalidParameter"


async def test_sms_subscription_is_confirmed_at_once_and_its_text_goes_to_the_webhook(autojump_clock):
    async with trio_endpoint() as endpoint, running_broker(pusher=webhook(endpoint.url)) as h:
        await h.ok(CreateTopic("t"))
        arn = (await h.ok(Subscribe("t", "sms", "+15555550100"))).arn
        assert arn.startswith(TOPIC + "t:")  # no "pending confirmation": AWS confirms SMS subscriptions at once
        attributes = (await h.ok(GetSubscriptionAttributes("t", arn))).attributes
        assert (attributes["Protocol"], attributes["Endpoint"], attributes["PendingConfirmation"]) == ("sms", "+15555550100", "false")
        published = await h.ok(Publish("t", "your code is 1234", subject="ignored by SMS"))
        (delivery,) = await endpoint.wait_for(1)  # and no SubscriptionConfirmation before it
        assert delivery.headers["content-type"] == "application/json; charset=UTF-8"
        assert delivery.json() == {
            "protocol": "sms", "endpoint": "+15555550100", "message": "your code is 1234", "messageId": published.message_id,
            "topicArn": TOPIC + "t", "subscriptionArn": arn,
        }
        await trio.sleep(1)  # the outcome is stored after the answer arrives
        (done,) = log_of(h, PushDone)
        assert (done.outcome, done.message_id) == ("delivered", published.message_id)
        await h.ok(Unsubscribe("t", arn))
        await trio.sleep(1)
        assert len(endpoint.requests) == 1  # no UnsubscribeConfirmation is sent to a phone


async def test_sms_subscription_is_not_deleted_by_an_unsigned_unsubscribe_url(autojump_clock):
    """Its owner confirmed it with a signed Subscribe: as for a queue, only a signed Unsubscribe
    deletes it, not a visit of the UnsubscribeURL (whose ARN the webhook sees)."""
    async with trio_endpoint() as endpoint, running_broker(pusher=webhook(endpoint.url)) as h:
        await h.ok(CreateTopic("t"))
        arn = (await h.ok(Subscribe("t", "sms", "+15555550100"))).arn
        with pytest.raises(BrokerError) as error:
            await h.ok(UnsubscribeByUrl("t", arn))
        assert error.value.code == "AuthorizationError"
        assert (await h.ok(GetSubscriptionAttributes("t", arn))).attributes["ConfirmationWasAuthenticated"] == "true"


async def made_endpoint(h) -> str:
    """A GCM application's endpoint, made as a device registers."""
    application = (await h.ok(CreatePlatformApplication("my-app", "GCM", {"PlatformCredential": "server-key"}))).arn
    return (await h.ok(CreatePlatformEndpoint(application, "device-token"))).arn


async def test_application_subscription_gets_its_platform_payload_of_a_json_message(autojump_clock):
    async with trio_endpoint() as endpoint, running_broker(pusher=webhook(endpoint.url)) as h:
        await h.ok(CreateTopic("t"))
        device = await made_endpoint(h)
        arn = (await h.ok(Subscribe("t", "application", device))).arn
        gcm = json.dumps({"notification": {"title": "hi"}})
        await h.ok(Publish("t", json.dumps({"default": "plain", "GCM": gcm, "APNS": "{}"}), message_structure="json"))
        await h.ok(Publish("t", json.dumps({"default": "plain only"}), message_structure="json"))
        first, second = await endpoint.wait_for(2)
        assert {first.json()["message"], second.json()["message"]} == {gcm, "plain only"}
        assert first.json()["protocol"] == "application" and first.json()["endpoint"] == device
        assert first.json()["subscriptionArn"] == arn


async def test_sms_subscription_gets_the_sms_payload_of_a_json_message(autojump_clock):
    async with trio_endpoint() as endpoint, running_broker(pusher=webhook(endpoint.url)) as h:
        await h.ok(CreateTopic("t"))
        await h.ok(Subscribe("t", "sms", "+15555550100"))
        await h.ok(Publish("t", json.dumps({"default": "the long story", "sms": "short"}), message_structure="json"))
        (delivery,) = await endpoint.wait_for(1)
        assert delivery.json()["message"] == "short"


async def test_sink_failures_are_retried_then_the_push_goes_to_the_dead_letter_queue(autojump_clock):
    async with trio_endpoint(lambda pushed: 503) as endpoint, running_broker(pusher=webhook(endpoint.url)) as h:
        await h.ok(CreateTopic("t"))
        await h.ok(CreateQueue("dlq"))
        policy = {"healthyRetryPolicy": {"minDelayTarget": 2, "maxDelayTarget": 2, "numRetries": 2}}
        arn = (await h.ok(Subscribe("t", "sms", "+15555550100", {"DeliveryPolicy": json.dumps(policy)}))).arn
        await h.ok(SetSubscriptionAttributes("t", arn, "RedrivePolicy", json.dumps({"deadLetterTargetArn": QUEUE + "dlq"})))
        await h.ok(Publish("t", "undeliverable"))
        await trio.sleep(30)
        attempts = await endpoint.wait_for(3)
        assert len(attempts) == 3 and attempts[2].at - attempts[0].at == pytest.approx(4, abs=0.1)
        (message,) = (await h.ok(ReceiveMessage("dlq", max_number_of_messages=10, attribute_names=["All"]))).messages
        assert message.body == "undeliverable" and message.attributes["DeadLetterQueueSourceArn"] == arn
        (done,) = log_of(h, PushDone)
        assert (done.outcome, done.attempts) == ("dead-lettered", 3)


async def test_sink_that_fails_then_recovers_delivers_the_push(autojump_clock):
    answers = iter([500, 500])
    async with trio_endpoint(lambda pushed: next(answers, 200)) as endpoint, running_broker(pusher=webhook(endpoint.url)) as h:
        await h.ok(CreateTopic("t"))
        await h.ok(Subscribe("t", "sms", "+15555550100"))
        await h.ok(Publish("t", "eventually"))
        await trio.sleep(120)
        assert [r.json()["message"] for r in endpoint.requests] == ["eventually"] * 3
        (done,) = log_of(h, PushDone)
        assert (done.outcome, done.attempts) == ("delivered", 3)


def script(tmp_path, text: str) -> str:
    path = tmp_path / "sink.sh"
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


REQUEST = PushRequest("sms", "+15555550100", "Notification", "m-1", TOPIC + "t", TOPIC + "t:s-1", "hello\nthere")


async def test_command_sink_gets_the_message_on_stdin_and_the_details_in_its_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DOVECOTE_SMTP_PASSWORD", "not for the sink")  # the broker's own settings stay its own
    out = tmp_path / "out"
    program = script(tmp_path, 'cat > "$1"; env | grep ^DOVECOTE_ | sort >> "$1"')
    sink = MobileSink(command=f"{program} {out}")
    assert await run_command(sink, REQUEST, timeout_s=10) == ""
    assert out.read_text().splitlines() == [
        "hello", "there" + "DOVECOTE_ENDPOINT=+15555550100", "DOVECOTE_MESSAGE_ID=m-1", "DOVECOTE_PROTOCOL=sms",
        f"DOVECOTE_SUBSCRIPTION_ARN={TOPIC}t:s-1", f"DOVECOTE_TOPIC_ARN={TOPIC}t",
    ]


async def test_command_sink_failure_is_its_exit_status_and_error_output(tmp_path):
    sink = MobileSink(command=script(tmp_path, "echo 'gateway said no' >&2; exit 3"))
    assert await run_command(sink, REQUEST, timeout_s=10) == "exit 3: gateway said no"
    assert (await run_command(MobileSink(command=str(tmp_path / "missing")), REQUEST, timeout_s=10)).startswith("FileNotFoundError")


async def test_command_sink_past_its_timeout_is_stopped_and_fails(tmp_path):
    sink = MobileSink(command=script(tmp_path, "sleep 30"))
    started = trio.current_time()
    assert await run_command(sink, REQUEST, timeout_s=0.5) == "timeout"
    assert trio.current_time() - started < 10


async def test_command_sink_runs_no_more_commands_at_once_than_the_push_cap(tmp_path):
    # Two at once would find the other's lock directory and fail.
    program = script(tmp_path, 'mkdir "$1/lock" || exit 9; sleep 0.3; rmdir "$1/lock"')
    pusher = Pusher(max_in_flight=1, sink=MobileSink(command=f"{program} {tmp_path}"))
    outcomes = []

    async def deliver() -> None:
        async with pusher.connection() as connection:
            outcomes.append(await connection.send(REQUEST))

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(deliver)
    assert outcomes == ["", "", ""]


async def test_sms_retries_follow_aws_policy_for_customer_managed_endpoints_not_the_topics(autojump_clock):
    """50 retries over more than 6 hours: 2 at 10 s, 10 backing off to 600 s, 38 at 600 s; the
    topic's DeliveryPolicy is for HTTP/S and does not apply."""
    topic_policy = {"http": {"defaultHealthyRetryPolicy": {"minDelayTarget": 1, "maxDelayTarget": 1, "numRetries": 1}}}
    async with trio_endpoint(lambda pushed: 500) as endpoint, running_broker(pusher=webhook(endpoint.url)) as h:
        await h.ok(CreateTopic("t", {"DeliveryPolicy": json.dumps(topic_policy)}))
        await h.ok(Subscribe("t", "sms", "+15555550100"))
        await h.ok(Publish("t", "doomed"))
        await endpoint.wait_for(51)
        await trio.sleep(3600)
        attempts = endpoint.requests
        assert len(attempts) == 51  # and no more
        gaps = [later.at - earlier.at for earlier, later in zip(attempts, attempts[1:])]
        assert gaps[:2] == pytest.approx([10, 10], abs=0.05)
        assert gaps[11] == pytest.approx(600, abs=0.05) and gaps[-38:] == pytest.approx([600] * 38, abs=0.05)
        assert attempts[-1].at - attempts[0].at > 6 * 3600
        (done,) = log_of(h, PushDone)
        assert (done.outcome, done.attempts) == ("dropped", 51)


async def test_command_sink_keeps_only_the_end_of_a_long_error_output(tmp_path):
    # 4 MB on stderr: the outcome is its end, and the broker never holds it all.
    sink = MobileSink(command=script(tmp_path, "yes x | head -c 4000000 >&2; echo 'the end' >&2; exit 1"))
    tracemalloc.start()
    try:
        outcome = await run_command(sink, REQUEST, timeout_s=10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000
    assert outcome.startswith("exit 1: x\nx\n") and outcome.endswith("x\nthe end") and len(outcome) <= 200


async def test_command_sink_that_exits_without_reading_its_message_delivers_it(tmp_path):
    big = msgspec.structs.replace(REQUEST, body="x" * 1_000_000)  # more than a pipe holds
    assert await run_command(MobileSink(command=script(tmp_path, "exit 0")), big, timeout_s=10) == ""
