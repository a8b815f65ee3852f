"""SNS platform applications and endpoints in the broker: stored with their state tables and
rebuilt from them at start, paged as SNS pages, deleted with their application, authorised by
their own IAM actions, on the autojump clock."""

import json

import pytest
import trio

from dovecote.actors.errors import BrokerError
from dovecote.actors.ops import (
    Arn,
    CreatePlatformApplication,
    CreatePlatformEndpoint,
    DeleteEndpoint,
    DeletePlatformApplication,
    Done,
    GetEndpointAttributes,
    GetPlatformApplicationAttributes,
    GetSMSAttributes,
    ListEndpointsByPlatformApplication,
    ListPlatformApplications,
    PublishedMessage,
    PublishToEndpoint,
    SetEndpointAttributes,
    SetSMSAttributes,
)
from dovecote.net.http_push import Pusher
from dovecote.net.mobile_sink import MobileSink
from dovecote.storage.memory_store import MemoryStore
from dovecote.storage.records import (
    PlatformApplicationChanged,
    PlatformApplicationDeleted,
    PlatformEndpointChanged,
    PushAttempted,
    PushDone,
    PushQueued,
)

from ..conftest import running_broker
from ..push_endpoint import trio_endpoint
from .test_access import allow, call, key, refused

APPLICATION = "arn:aws:sns:us-east-1:000000000000:app/GCM/my-app"
CREDENTIAL = {"PlatformCredential": "server-key"}


async def test_applications_and_endpoints_are_rebuilt_from_the_store_at_start(autojump_clock):
    store = MemoryStore()
    async with running_broker(store) as h:
        assert await h.ok(CreatePlatformApplication("my-app", "GCM", CREDENTIAL)) == Arn(APPLICATION)
        endpoint = (await h.ok(CreatePlatformEndpoint(APPLICATION, "token-1", "alice"))).arn
        await h.ok(SetEndpointAttributes(endpoint, {"Enabled": "False"}))
    # Each change is a record in the log; the credential is in none of them.
    stored = [record for _, record in store.read_log() if isinstance(record, (PlatformApplicationChanged, PlatformEndpointChanged))]
    assert [type(record) for record in stored] == [PlatformApplicationChanged, PlatformEndpointChanged, PlatformEndpointChanged]
    assert "server-key" not in repr(stored)
    async with running_broker(store) as h:
        assert (await h.ok(GetPlatformApplicationAttributes(APPLICATION))).attributes == {"Enabled": "true"}
        attributes = (await h.ok(GetEndpointAttributes(endpoint))).attributes
        assert attributes == {"Enabled": "false", "Token": "token-1", "CustomUserData": "alice"}
        assert (await h.ok(CreatePlatformEndpoint(APPLICATION, "token-1", "alice"))).arn == endpoint  # still idempotent


async def test_deleting_an_application_deletes_its_endpoints_in_the_store(autojump_clock):
    store = MemoryStore()
    async with running_broker(store) as h:
        await h.ok(CreatePlatformApplication("my-app", "GCM", CREDENTIAL))
        other = (await h.ok(CreatePlatformApplication("other", "APNS", CREDENTIAL))).arn
        await h.ok(CreatePlatformEndpoint(APPLICATION, "token-1"))
        kept = (await h.ok(CreatePlatformEndpoint(other, "token-1"))).arn  # the same token in another application
        assert await h.ok(DeletePlatformApplication(APPLICATION)) == Done()
        assert await h.ok(DeletePlatformApplication(APPLICATION)) == Done()  # gone already: still a success
        assert await h.ok(DeleteEndpoint(APPLICATION.replace(":app/", ":endpoint/") + "/0")) == Done()
    assert [record.arn for _, record in store.read_log() if isinstance(record, PlatformApplicationDeleted)] == [APPLICATION]
    loaded = store.load_platform()
    assert [a.arn for a in loaded.applications] == [other]
    assert [e.arn for e in loaded.endpoints] == [kept]


async def test_listings_page_a_hundred_at_a_time(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreatePlatformApplication("my-app", "GCM", CREDENTIAL))
        made = {(await h.ok(CreatePlatformEndpoint(APPLICATION, f"token-{n}"))).arn for n in range(101)}
        first = await h.ok(ListEndpointsByPlatformApplication(APPLICATION))
        assert len(first.resources) == 100 and first.next_token is not None
        second = await h.ok(ListEndpointsByPlatformApplication(APPLICATION, first.next_token))
        assert second.next_token is None
        assert {r.arn for r in first.resources + second.resources} == made
        with pytest.raises(BrokerError, match="Invalid parameter: NextToken"):
            await h.ok(ListPlatformApplications("not a token we made"))


async def test_platform_operations_are_authorised_by_their_own_actions(autojump_clock):
    creator = key("creator", allow("sns:CreatePlatformApplication"))
    reader = key("reader", allow("sns:GetPlatformApplicationAttributes", APPLICATION))
    async with running_broker() as h:
        assert await call(h, creator, CreatePlatformApplication("my-app", "GCM", CREDENTIAL)) == Arn(APPLICATION)
        assert (await refused(h, creator, CreatePlatformEndpoint(APPLICATION, "t"))).code == "AuthorizationError"
        assert (await call(h, reader, GetPlatformApplicationAttributes(APPLICATION))).attributes == {"Enabled": "true"}
        other = APPLICATION.replace("my-app", "other")
        assert (await refused(h, reader, GetPlatformApplicationAttributes(other))).code == "AuthorizationError"


def webhook(url: str) -> Pusher:
    return Pusher(sink=MobileSink(url=url))


async def registered_device(h) -> str:
    await h.ok(CreatePlatformApplication("my-app", "GCM", CREDENTIAL))
    return (await h.ok(CreatePlatformEndpoint(APPLICATION, "device-token"))).arn


async def test_a_publish_to_an_endpoint_reaches_the_sink_with_its_platform_payload(autojump_clock):
    async with trio_endpoint() as sink, running_broker(pusher=webhook(sink.url)) as h:
        device = await registered_device(h)
        gcm = json.dumps({"notification": {"title": "hi"}})
        published = await h.ok(PublishToEndpoint(device, json.dumps({"default": "plain", "GCM": gcm}), message_structure="json"))
        assert isinstance(published, PublishedMessage)
        plain = await h.ok(PublishToEndpoint(device, "to every platform"))
        first, second = await sink.wait_for(2)
        assert {first.json()["message"], second.json()["message"]} == {gcm, "to every platform"}
        assert first.json()["endpoint"] == device and first.json()["protocol"] == "application"
        assert {first.json()["messageId"], second.json()["messageId"]} == {published.message_id, plain.message_id}
        await trio.sleep(1)
        # The log tells each delivery's story, naming the endpoint.
        assert {(r.topic, r.message_id) for _, r in h.store.read_log() if isinstance(r, PushQueued)} == {
            (device, published.message_id), (device, plain.message_id),
        }
        assert sorted(r.outcome for _, r in h.store.read_log() if isinstance(r, PushDone)) == ["delivered", "delivered"]


async def test_a_publish_to_an_endpoint_is_retried_by_aws_policy_and_resumed_after_a_restart(autojump_clock):
    store = MemoryStore()
    async with trio_endpoint(lambda pushed: 503) as sink, running_broker(store, pusher=webhook(sink.url)) as h:
        device = await registered_device(h)
        sent = (await h.ok(PublishToEndpoint(device, "wake up"))).message_id
        await sink.wait_for(4)  # the first attempt and three retries of AWS's policy (10 s apart, then backing off)
    attempted = [r for _, r in store.read_log() if isinstance(r, PushAttempted)]
    assert attempted and attempted[-1].outcome == "HTTP 503"
    async with trio_endpoint() as sink, running_broker(store, pusher=webhook(sink.url)) as h:
        (delivery,) = await sink.wait_for(1)
        assert (delivery.json()["message"], delivery.json()["messageId"]) == ("wake up", sent)
        await trio.sleep(1)
        assert [r.outcome for _, r in store.read_log() if isinstance(r, PushDone)] == ["delivered"]
        assert store.load_platform().pushes == []


async def test_deleting_an_endpoint_drops_its_pending_publishes(autojump_clock):
    store = MemoryStore()
    async with trio_endpoint(lambda pushed: 503) as sink, running_broker(store, pusher=webhook(sink.url)) as h:
        device = await registered_device(h)
        await h.ok(PublishToEndpoint(device, "never delivered"))
        await sink.wait_for(1)
        assert len(store.load_platform().pushes) == 1
        await h.ok(DeleteEndpoint(device))
        assert store.load_platform().pushes == []
        attempts = len(sink.requests)
        await trio.sleep(3600)
        assert len(sink.requests) == attempts  # its delivery actor stopped


async def test_a_publish_to_an_endpoint_is_refused_as_aws_refuses_it(autojump_clock):
    async with running_broker() as h:  # no sink
        device = await registered_device(h)
        with pytest.raises(BrokerError, match="mobile_sink_url or mobile_sink_command"):
            await h.ok(PublishToEndpoint(device, "hi"))
    async with trio_endpoint() as sink, running_broker(pusher=webhook(sink.url)) as h:
        device = await registered_device(h)
        with pytest.raises(BrokerError, match="^Invalid parameter: TargetArn Reason: No endpoint found for the target arn specified$"):
            await h.ok(PublishToEndpoint(device[:-1] + ("1" if device.endswith("0") else "0"), "hi"))  # another id
        with pytest.raises(BrokerError, match="No default entry in JSON message body"):
            await h.ok(PublishToEndpoint(device, json.dumps({"GCM": "{}"}), message_structure="json"))
        await h.ok(SetEndpointAttributes(device, {"Enabled": "false"}))
        with pytest.raises(BrokerError) as refused_publish:
            await h.ok(PublishToEndpoint(device, "hi"))
        assert (refused_publish.value.code, refused_publish.value.message) == ("EndpointDisabled", "Endpoint is disabled")
        assert sink.requests == []


async def test_the_sms_attributes_are_kept_and_checked(autojump_clock):
    store = MemoryStore()
    async with running_broker(store) as h:
        assert (await h.ok(GetSMSAttributes())).attributes == {}
        await h.ok(SetSMSAttributes({"DefaultSMSType": "Promotional", "DeliveryStatusSuccessSamplingRate": "10"}))
        for attributes, reason in [
            ({"Colour": "red"}, "Colour is not a valid SMS attribute"),
            ({"MonthlySpendLimit": "-1"}, "MonthlySpendLimit Reason"),
            ({"DeliveryStatusSuccessSamplingRate": "101"}, "DeliveryStatusSuccessSamplingRate Reason"),
            ({"DefaultSenderID": "123"}, "DefaultSenderID Reason"),
        ]:
            with pytest.raises(BrokerError, match=reason):
                await h.ok(SetSMSAttributes(attributes))
    async with running_broker(store) as h:
        await h.ok(SetSMSAttributes({"DefaultSMSType": "Transactional"}))
        assert (await h.ok(GetSMSAttributes())).attributes == {"DefaultSMSType": "Transactional", "DeliveryStatusSuccessSamplingRate": "10"}
        assert (await h.ok(GetSMSAttributes(["DefaultSMSType"]))).attributes == {"DefaultSMSType": "Transactional"}


async def test_a_failing_delivery_actor_restarts_the_platform_actor_and_the_broker_serves_on(autojump_clock, monkeypatch):
    from dovecote.actors import platform

    failures = []

    class FailingOnce(platform.DeliveryActor):
        async def run(self) -> None:
            if not failures:
                failures.append("injected")
                raise RuntimeError("injected failure in a delivery actor")
            await super().run()

    monkeypatch.setattr(platform, "DeliveryActor", FailingOnce)
    async with trio_endpoint() as sink, running_broker(pusher=webhook(sink.url)) as h:
        device = await registered_device(h)
        sent = (await h.ok(PublishToEndpoint(device, "wake up"))).message_id
        # Rebuilt from the store, the platform actor hands the stored publish to a new delivery actor.
        (delivery,) = await sink.wait_for(1)
        assert failures == ["injected"] and delivery.json()["messageId"] == sent
        assert h.broker.platform_report().health.restarts == 1
        assert "injected failure" in h.broker.platform_report().health.last_error
        assert (await h.ok(GetEndpointAttributes(device))).attributes["Enabled"] == "true"


async def test_a_platform_actor_failing_again_and_again_is_stopped_with_a_clear_error(autojump_clock, monkeypatch):
    from dovecote.actors import platform

    class AlwaysFailing(platform.DeliveryActor):
        async def run(self) -> None:
            raise RuntimeError("injected failure in a delivery actor")

    monkeypatch.setattr(platform, "DeliveryActor", AlwaysFailing)
    async with trio_endpoint() as sink, running_broker(pusher=webhook(sink.url)) as h:
        device = await registered_device(h)
        await h.ok(PublishToEndpoint(device, "wake up"))  # pending in the store: each restart fails on it again
        await trio.sleep(5)
        assert h.broker.platform_report().health.stopped
        with pytest.raises(BrokerError) as refused_call:
            await h.ok(GetEndpointAttributes(device))
        assert refused_call.value.code == "ServiceUnavailable" and "failed 5 times in a row" in refused_call.value.message
        (report,) = h.broker.statistics()  # /actors shows it among the queues and topics (none here)
        assert (report.kind, report.health.restarts) == ("platform", 5)
