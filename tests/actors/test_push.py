"""HTTP/S push delivery against real HTTP endpoints in the test's Trio loop: the confirmation
handshake, the envelope and headers, signatures, every retry phase and the throttle on the autojump
clock, dead letters, hanging and dead endpoints, and pending pushes across a restart."""

import datetime
import json

import pytest
import trio

from dovecote.actors.delivery_policy import RetryPolicy, retry_delays
from dovecote.actors.errors import BrokerError
from dovecote.actors.config import BrokerConfig
from dovecote.actors.ops import (
    MessageAttributeValue,
    ConfirmSubscription,
    CreateQueue,
    CreateTopic,
    DeleteTopic,
    GetQueueAttributes,
    GetSubscriptionAttributes,
    ListSubscriptionsByTopic,
    Publish,
    ReceiveMessage,
    SetSubscriptionAttributes,
    SetTopicAttributes,
    Subscribe,
    Unsubscribe,
)
from dovecote.actors.certificates import new_key_and_certificate
from dovecote.actors.signing import Signer
from dovecote.history import LogFilter, iter_log
from dovecote.net.http_push import Pusher
from dovecote.storage.memory_store import MemoryStore
from dovecote.storage.records import PushAttempted, PushDone, PushQueued, SubscriptionChanged

from ..conftest import running_broker
from ..push_endpoint import trio_endpoint, unused_port_url
from ..sns_verify import verify_sns_message

TOPIC = "arn:aws:sns:us-east-1:000000000000:"
QUEUE = "arn:aws:sqs:us-east-1:000000000000:"
KEY, CERTIFICATE = new_key_and_certificate("test", datetime.datetime(2026, 11, 23, tzinfo=datetime.UTC))


def signer() -> Signer:
    return Signer(lambda: KEY, "http://127.0.0.1:7481/SimpleNotificationService-dovecote.pem")


async def confirmed(h, endpoint, topic="t", **attributes) -> str:
    """Subscribe the endpoint and confirm with the token it was sent; the subscription's ARN."""
    before = len(endpoint.of_type("SubscriptionConfirmation"))
    pending = await h.ok(Subscribe(topic, "http", endpoint.url, attributes))
    assert pending.arn == "pending confirmation"
    while len(endpoint.of_type("SubscriptionConfirmation")) == before:
        await endpoint.wait_for(len(endpoint.requests) + 1)
    token = endpoint.of_type("SubscriptionConfirmation")[-1].json()["Token"]
    return (await h.ok(ConfirmSubscription(topic, token))).arn


def log_of(h, kind):
    return [record for _, record in h.store.read_log() if isinstance(record, kind)]


async def test_the_confirmation_handshake_then_signed_notifications_with_aws_headers(autojump_clock):
    async with trio_endpoint() as endpoint, running_broker(signer=signer()) as h:
        await h.ok(CreateTopic("t"))
        pending = await h.ok(Subscribe("t", "http", endpoint.url))
        assert pending.arn == "pending confirmation"
        (confirmation,) = await endpoint.wait_for(1)
        assert confirmation.headers["x-amz-sns-message-type"] == "SubscriptionConfirmation"
        assert confirmation.headers["x-amz-sns-topic-arn"] == TOPIC + "t"
        message = confirmation.json()
        assert set(message) == {
            "Type", "MessageId", "Token", "TopicArn", "Message", "SubscribeURL", "Timestamp", "SignatureVersion",
            "Signature", "SigningCertURL",
        }
        assert message["SubscribeURL"].startswith("http://127.0.0.1:7481/?Action=ConfirmSubscription&TopicArn=")
        assert message["SubscribeURL"].endswith("&Token=" + message["Token"])
        verify_sns_message(message, CERTIFICATE)
        (listed,) = (await h.ok(ListSubscriptionsByTopic("t"))).subscriptions
        assert listed.subscription_arn == "PendingConfirmation"

        await h.ok(Publish("t", "before confirmation"))
        await trio.sleep(5)
        assert len(endpoint.requests) == 1  # nothing goes to a pending subscription

        with pytest.raises(BrokerError) as error:
            await h.ok(ConfirmSubscription("t", "not-the-token"))
        assert error.value.code == "InvalidParameter"
        arn = (await h.ok(ConfirmSubscription("t", message["Token"]))).arn
        assert arn.startswith(TOPIC + "t:")
        assert (await h.ok(ConfirmSubscription("t", message["Token"]))).arn == arn  # again: the same
        attributes = (await h.ok(GetSubscriptionAttributes("t", arn))).attributes
        assert attributes["PendingConfirmation"] == "false" and "dovecote:Token" not in attributes

        await h.ok(Publish("t", "hello", subject="greeting", message_attributes={"k": MessageAttributeValue("String", "v")}))
        _, notification = await endpoint.wait_for(2)
        assert notification.headers["x-amz-sns-message-type"] == "Notification"
        assert notification.headers["x-amz-sns-subscription-arn"] == arn
        assert notification.headers["x-amz-sns-topic-arn"] == TOPIC + "t"
        assert notification.headers["content-type"] == "text/plain; charset=UTF-8"
        assert "x-amz-sns-rawdelivery" not in notification.headers
        envelope = notification.json()
        assert notification.headers["x-amz-sns-message-id"] == envelope["MessageId"]
        assert envelope["Message"] == "hello" and envelope["Subject"] == "greeting"
        assert envelope["MessageAttributes"] == {"k": {"Type": "String", "Value": "v"}}
        assert envelope["UnsubscribeURL"].endswith("SubscriptionArn=" + arn)
        verify_sns_message(envelope, CERTIFICATE)
        await trio.sleep(1)  # the answer is stored after it arrives
        (done,) = log_of(h, PushDone)
        assert (done.outcome, done.attempts, done.message_id) == ("delivered", 1, envelope["MessageId"])
        assert h.store.read_pushes(done.topic_id, done.subscription_id, [done.seq]) == [None]

        await h.ok(SetTopicAttributes("t", "SignatureVersion", "2"))
        await h.ok(Publish("t", "signed with SHA256"))
        *_, second = await endpoint.wait_for(3)
        assert second.json()["SignatureVersion"] == "2"
        verify_sns_message(second.json(), CERTIFICATE)

        await h.ok(Unsubscribe("t", arn))
        *_, goodbye = await endpoint.wait_for(4)
        assert goodbye.headers["x-amz-sns-message-type"] == "UnsubscribeConfirmation"
        verify_sns_message(goodbye.json(), CERTIFICATE)
        await h.ok(Publish("t", "after unsubscribe"))
        await trio.sleep(5)
        assert len(endpoint.requests) == 4


async def test_raw_delivery_posts_the_message_itself_with_its_header(autojump_clock):
    async with trio_endpoint() as endpoint, running_broker() as h:
        await h.ok(CreateTopic("t"))
        await confirmed(
            h, endpoint, RawMessageDelivery="true", FilterPolicy=json.dumps({"kind": ["a"]}),
            DeliveryPolicy=json.dumps({"requestPolicy": {"headerContentType": "application/json"}}),
        )
        await h.ok(Publish("t", "skipped", message_attributes={"kind": MessageAttributeValue("String", "b")}))
        await h.ok(Publish("t", "raw body", message_attributes={"kind": MessageAttributeValue("String", "a")}))
        await h.ok(Publish("t", json.dumps({"default": "d", "http": "for http"}), message_structure="json",
                           message_attributes={"kind": MessageAttributeValue("String", "a")}))
        _, raw, structured = await endpoint.wait_for(3)
        await trio.sleep(5)
        assert len(endpoint.requests) == 3  # the filter policy held the other back
        assert raw.body == "raw body" and raw.headers["x-amz-sns-rawdelivery"] == "true"
        assert raw.headers["content-type"] == "application/json"  # the request policy's
        assert structured.body == "for http"


def phase_policy(backoff: str) -> dict:
    return {
        "minDelayTarget": 2, "maxDelayTarget": 40, "numRetries": 10, "numNoDelayRetries": 2,
        "numMinDelayRetries": 2, "numMaxDelayRetries": 2, "backoffFunction": backoff,
    }


@pytest.mark.parametrize("backoff", ["linear", "arithmetic", "geometric", "exponential"])
async def test_every_retry_phase_is_honoured_then_the_push_is_dropped(autojump_clock, backoff):
    async with trio_endpoint(lambda pushed: 500 if pushed.headers["x-amz-sns-message-type"] == "Notification" else 200) as endpoint:
        async with running_broker() as h:
            await h.ok(CreateTopic("t"))
            await confirmed(h, endpoint, DeliveryPolicy=json.dumps({"healthyRetryPolicy": phase_policy(backoff)}))
            await h.ok(Publish("t", "doomed"))
            await endpoint.wait_for(1 + 11)
            await trio.sleep(100)
            attempts = endpoint.of_type("Notification")
            assert len(attempts) == 11  # the first attempt and 10 retries, no more
            gaps = [later.at - earlier.at for earlier, later in zip(attempts, attempts[1:])]
            expected = retry_delays(RetryPolicy(2, 40, 10, 2, 2, 2, backoff))
            assert gaps == pytest.approx(expected, abs=0.05)
            assert gaps[:2] == pytest.approx([0, 0], abs=0.05) and gaps[2:4] == pytest.approx([2, 2], abs=0.05)
            assert gaps[-3:] == pytest.approx([40, 40, 40], abs=0.05)  # the last backoff retry reaches max
            tried = log_of(h, PushAttempted)
            assert [r.attempt for r in tried] == list(range(1, 11)) and {r.outcome for r in tried} == {"HTTP 500"}
            (done,) = log_of(h, PushDone)
            assert (done.outcome, done.attempts) == ("dropped", 11)


async def test_the_topic_policy_applies_unless_the_subscription_has_its_own(autojump_clock):
    topic_policy = {"http": {"defaultHealthyRetryPolicy": {"minDelayTarget": 5, "maxDelayTarget": 5, "numRetries": 1}}}
    async with trio_endpoint(lambda pushed: 503 if "Notification" in pushed.body else 200) as endpoint:
        async with running_broker() as h:
            await h.ok(CreateTopic("t", {"DeliveryPolicy": json.dumps(topic_policy)}))
            await confirmed(h, endpoint)
            await h.ok(Publish("t", "x"))
            await trio.sleep(60)
            first, retry = endpoint.of_type("Notification")
            assert retry.at - first.at == pytest.approx(5, abs=0.05)


async def test_the_throttle_spaces_deliveries(autojump_clock):
    async with trio_endpoint() as endpoint, running_broker() as h:
        await h.ok(CreateTopic("t"))
        await confirmed(h, endpoint, DeliveryPolicy=json.dumps({"throttlePolicy": {"maxReceivesPerSecond": 2}}))
        started = trio.current_time()
        for i in range(10):
            await h.ok(Publish("t", f"m{i}"))
        assert trio.current_time() - started < 0.5  # the publisher is not held back
        await endpoint.wait_for(11)
        arrivals = [r.at for r in endpoint.of_type("Notification")]
        gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
        assert min(gaps) >= 0.49 and arrivals[-1] - arrivals[0] == pytest.approx(4.5, abs=0.1)
        assert sorted(json.loads(r.body)["Message"] for r in endpoint.of_type("Notification")) == sorted(f"m{i}" for i in range(10))


async def test_an_exhausted_push_goes_to_the_subscription_dead_letter_queue(autojump_clock):
    async with trio_endpoint(lambda pushed: 500 if "Notification" in pushed.body else 200) as endpoint:
        async with running_broker() as h:
            await h.ok(CreateTopic("t"))
            await h.ok(CreateQueue("dlq"))
            policy = {"healthyRetryPolicy": {"minDelayTarget": 1, "maxDelayTarget": 1, "numRetries": 2}}
            arn = await confirmed(h, endpoint, DeliveryPolicy=json.dumps(policy))
            await h.ok(CreateQueue("dlq.fifo", {"FifoQueue": "true"}))
            with pytest.raises(BrokerError) as error:
                await h.ok(SetSubscriptionAttributes("t", arn, "RedrivePolicy", json.dumps({"deadLetterTargetArn": QUEUE + "dlq.fifo"})))
            assert "standard queue" in error.value.message
            await h.ok(SetSubscriptionAttributes("t", arn, "RedrivePolicy", json.dumps({"deadLetterTargetArn": QUEUE + "dlq"})))
            await h.ok(Publish("t", "undeliverable"))
            await trio.sleep(30)
            assert len(endpoint.of_type("Notification")) == 3
            (message,) = (await h.ok(ReceiveMessage("dlq", max_number_of_messages=10, attribute_names=["All"]))).messages
            envelope = json.loads(message.body)
            assert envelope["Message"] == "undeliverable" and envelope["UnsubscribeURL"].endswith(arn)
            assert message.attributes["DeadLetterQueueSourceArn"] == arn
            (done,) = log_of(h, PushDone)
            assert (done.outcome, done.attempts) == ("dead-lettered", 3)
            assert h.store.read_pushes(done.topic_id, done.subscription_id, [done.seq]) == [None]


async def test_a_hanging_endpoint_times_out_and_slows_no_one_else(autojump_clock):
    async with trio_endpoint(lambda pushed: None if pushed.headers["x-amz-sns-message-type"] == "Notification" else 200) as hanging:
        async with trio_endpoint() as healthy, running_broker(pusher=Pusher(timeout_s=15)) as h:
            await h.ok(CreateTopic("t"))
            policy = {"healthyRetryPolicy": {"minDelayTarget": 10, "maxDelayTarget": 10, "numRetries": 1}}
            await confirmed(h, hanging, DeliveryPolicy=json.dumps(policy))
            await confirmed(h, healthy)
            started, started_ms = trio.current_time(), h.clock.wall_ms()
            for i in range(100):  # more than the hanging subscription's attempts in flight
                await h.ok(Publish("t", f"m{i}"))
            await healthy.wait_for(1 + 100)
            assert trio.current_time() - started < 1  # the hanging endpoint held up neither
            await trio.sleep(1000)  # 8 attempts at a time, each timing out after 15 s
            tried = log_of(h, PushAttempted)
            assert {r.outcome for r in tried} == {"timeout"} and len(tried) == 100
            assert min(r.at_ms for r in tried) - started_ms == pytest.approx(15_000, abs=100)  # the attempt's timeout
            assert [r.outcome for r in log_of(h, PushDone)].count("dropped") == 100
            first, second = sorted(r.at for r in hanging.of_type("Notification") if json.loads(r.body)["Message"] == "m0")
            assert second - first >= 15 + 10 - 0.1  # the timeout, then the retry delay (or longer: 8 in flight at most)
            assert len(hanging.of_type("Notification")) == 200


async def test_a_dead_endpoint_is_retried_and_dropped_while_the_publisher_goes_on(autojump_clock):
    async with trio_endpoint() as healthy, running_broker() as h:
        await h.ok(CreateTopic("t"))
        await h.ok(CreateQueue("q"))
        await confirmed(h, healthy)
        await h.ok(Subscribe("t", "sqs", QUEUE + "q"))
        # The dead endpoint never confirms; confirm it with the token the broker stored.
        dead = unused_port_url()
        await h.ok(Subscribe("t", "http", dead, {"DeliveryPolicy": json.dumps({"healthyRetryPolicy": {"numRetries": 2, "minDelayTarget": 1, "maxDelayTarget": 1}})}))
        token = next(r.attributes for r in log_of(h, SubscriptionChanged) if r.endpoint == dead)["dovecote:Token"]
        dead_arn = (await h.ok(ConfirmSubscription("t", token))).arn
        for i in range(50):
            await h.ok(Publish("t", f"m{i}"))
        await healthy.wait_for(1 + 50)
        assert (await h.ok(GetQueueAttributes("q", ["ApproximateNumberOfMessages"]))).attributes["ApproximateNumberOfMessages"] == "50"
        await trio.sleep(30)
        dropped = [r for r in log_of(h, PushDone) if r.outcome == "dropped"]
        assert len(dropped) == 50 and {r.attempts for r in dropped} == {3}
        tried = log_of(h, PushAttempted)
        assert all(r.outcome.startswith("unreachable: ") and r.message_id for r in tried)
        # One refused connection stands for the attempts that fall due with it: most are not sent.
        inferred = [r for r in tried if r.outcome.endswith("(not sent: the endpoint refused a connection just before)")]
        assert 0 < len(tried) - len(inferred) < len(inferred)
        # `dovecote log --subscription` finds a subscription's push records by the ids they carry.
        history = [r for _, r in iter_log(h.store, LogFilter(subscriptions=frozenset({dead_arn})))]
        kinds = {type(r).__name__ for r in history}
        assert kinds == {"SubscriptionChanged", "Published", "PushQueued", "PushAttempted", "PushDone"}
        pushes = [r for r in history if isinstance(r, (PushQueued, PushAttempted, PushDone))]
        assert len({r.subscription_id for r in pushes}) == 1 and len(pushes) == 50 + len(tried) + 50


async def test_pending_pushes_resume_after_a_restart_where_they_were(autojump_clock):
    store = MemoryStore()
    failing = True
    async with trio_endpoint(lambda pushed: 500 if failing and "Notification" in pushed.body else 200) as endpoint:
        policy = {"healthyRetryPolicy": {"minDelayTarget": 30, "maxDelayTarget": 30, "numRetries": 5}}
        async with running_broker(store) as h:
            await h.ok(CreateTopic("t"))
            await confirmed(h, endpoint, DeliveryPolicy=json.dumps(policy))
            for i in range(20):
                await h.ok(Publish("t", f"m{i}"))
            await trio.sleep(40)  # every push failed twice: the first attempt and one retry
            stopped_at_ms = h.clock.wall_ms()
        assert {r.attempt for r in log_of(h, PushAttempted)} == {1, 2}
        failing = False
        async with running_broker(store, start_wall_ms=stopped_at_ms) as h:
            await trio.sleep(19)  # the third attempts are due 30 s after the second (20 s from here)
            before = len(endpoint.of_type("Notification"))
            await trio.sleep(10)
            delivered = [json.loads(r.body)["Message"] for r in endpoint.of_type("Notification")[before:]]
            assert sorted(delivered) == sorted(f"m{i}" for i in range(20))
            done = log_of(h, PushDone)
            assert len(done) == 20 and {(r.outcome, r.attempts) for r in done} == {("delivered", 3)}
            queued = log_of(h, PushQueued)
            assert h.store.read_pushes(queued[0].topic_id, queued[0].subscription_id, [r.seq for r in queued]) == [None] * 20


def tls_files(tmp_path):
    """A CA, and a certificate it signed for 127.0.0.1: (CA file, server TLS context)."""
    import ssl

    from ..tls_certificates import CertificateAuthority

    ca = CertificateAuthority(tmp_path, "test CA")
    server = ca.issue("127.0.0.1", server=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server.certificate_file, server.key_file)
    return ca.certificate_file, context


async def test_https_endpoints_are_reached_when_their_certificate_checks_out(autojump_clock, tmp_path):
    ca_file, server_tls = tls_files(tmp_path)
    async with trio_endpoint(tls=server_tls) as endpoint:
        async with running_broker(pusher=Pusher(verify=ca_file)) as h:
            await h.ok(CreateTopic("t"))
            with pytest.raises(BrokerError):
                await h.ok(Subscribe("t", "https", endpoint.url.replace("https:", "http:")))  # the scheme is the protocol
            pending = await h.ok(Subscribe("t", "https", endpoint.url))
            assert pending.arn == "pending confirmation"
            (confirmation,) = await endpoint.wait_for(1)
            await h.ok(ConfirmSubscription("t", confirmation.json()["Token"]))
            await h.ok(Publish("t", "over TLS"))
            _, notification = await endpoint.wait_for(2)
            assert notification.json()["Message"] == "over TLS"
        # A broker that trusts only the system's CAs refuses the endpoint's certificate.
        async with running_broker(pusher=Pusher()) as h:
            await h.ok(CreateTopic("t"))
            await h.ok(Subscribe("t", "https", endpoint.url))
            await trio.sleep(120)
            assert len(endpoint.requests) == 2


async def test_unsubscribing_or_deleting_the_topic_drops_its_pending_pushes(autojump_clock):
    store = MemoryStore()
    async with trio_endpoint(lambda pushed: 500 if "Notification" in pushed.body else 200) as endpoint:
        async with running_broker(store) as h:
            for topic in ("kept", "gone"):
                await h.ok(CreateTopic(topic))
            policy = json.dumps({"healthyRetryPolicy": {"minDelayTarget": 600, "maxDelayTarget": 600, "numRetries": 3}})
            unsubscribed = await confirmed(h, endpoint, "kept", DeliveryPolicy=policy)
            await confirmed(h, endpoint, "gone", DeliveryPolicy=policy)
            for topic in ("kept", "gone"):
                for i in range(5):
                    await h.ok(Publish(topic, f"{topic}-{i}"))
            await trio.sleep(10)  # every first attempt failed; the retries wait 600 s
            queued = log_of(h, PushQueued)
            assert len(queued) == 10
            assert all(h.store.read_pushes(r.topic_id, r.subscription_id, [r.seq]) != [None] for r in queued)
            await h.ok(Unsubscribe("kept", unsubscribed))
            await h.ok(DeleteTopic("gone"))
            assert all(h.store.read_pushes(r.topic_id, r.subscription_id, [r.seq]) == [None] for r in queued)
            attempts_before = len(endpoint.of_type("Notification"))
            await trio.sleep(2000)
            assert len(endpoint.of_type("Notification")) == attempts_before  # nobody retries them
        async with running_broker(store) as h:
            await trio.sleep(2000)
            assert len(endpoint.of_type("Notification")) == attempts_before  # nor after a restart


async def test_a_subscription_keeps_at_most_its_cap_of_pending_pushes(autojump_clock):
    config = BrokerConfig(restart_backoff_s=(0.0, 0.1), max_pending_pushes=10)
    async with trio_endpoint(lambda pushed: 503 if "Notification" in pushed.body else 200) as endpoint:
        async with running_broker(config=config) as h:
            await h.ok(CreateTopic("t"))
            await h.ok(CreateQueue("q"))
            await h.ok(Subscribe("t", "sqs", QUEUE + "q"))
            policy = json.dumps({"healthyRetryPolicy": {"minDelayTarget": 600, "maxDelayTarget": 600, "numRetries": 3}})
            await confirmed(h, endpoint, DeliveryPolicy=policy)
            for i in range(30):
                await h.ok(Publish("t", f"m{i}"))  # every publish is accepted
            await trio.sleep(5)
            dropped = [r for r in log_of(h, PushDone) if r.outcome.startswith("dropped: the subscription already has 10")]
            assert len(dropped) == 20
            queued = log_of(h, PushQueued)
            pending = [r for r in queued if h.store.read_pushes(r.topic_id, r.subscription_id, [r.seq]) != [None]]
            assert len(pending) == 10
            attributes = (await h.ok(GetQueueAttributes("q", ["ApproximateNumberOfMessages"]))).attributes
            assert attributes["ApproximateNumberOfMessages"] == "30"  # the queue subscription got every one


async def test_http_pushes_are_signed_even_where_queue_envelopes_are_not(autojump_clock):
    config = BrokerConfig(restart_backoff_s=(0.0, 0.1), sign_sqs_envelopes=False)
    async with trio_endpoint() as endpoint, running_broker(config=config, signer=signer()) as h:
        await h.ok(CreateTopic("t"))
        await h.ok(CreateQueue("q"))
        await h.ok(Subscribe("t", "sqs", QUEUE + "q"))  # first: its unsigned envelope is made first
        await confirmed(h, endpoint)
        await h.ok(Publish("t", "both"))
        _, pushed = await endpoint.wait_for(2)
        verify_sns_message(pushed.json(), CERTIFICATE)
        await trio.sleep(0.1)
        (queued,) = (await h.ok(ReceiveMessage("q"))).messages
        envelope = json.loads(queued.body)
        assert envelope["Message"] == "both" and "Signature" not in envelope
