"""SMS straight to a phone number (Publish with a PhoneNumber) and the SMS sandbox's numbers, in the
broker: delivered through the sink by the number's delivery actor, retried and resumed after a
restart, refused as AWS refuses them; the sandbox kept in the store; on the autojump clock."""

import json

import pytest
import trio

from dovecote.actors.errors import BrokerError
from dovecote.actors.mobile import DIRECT_SMS_ID_BASE, direct_sms_id, direct_sms_number
from dovecote.actors.ops import (
    CreateSMSSandboxPhoneNumber,
    DeleteSMSSandboxPhoneNumber,
    Done,
    ListSMSSandboxPhoneNumbers,
    MessageAttributeValue,
    PublishedMessage,
    PublishToPhoneNumber,
    SandboxPhoneNumber,
    VerifySMSSandboxPhoneNumber,
)
from dovecote.storage.memory_store import MemoryStore
from dovecote.storage.records import PushAttempted, PushDone, PushQueued, SMSSandboxNumberChanged, SMSSandboxNumberDeleted
from dovecote.storage.tables import DIRECT_PUSHES

from ..conftest import running_broker
from ..push_endpoint import trio_endpoint
from .test_access import allow, call, key, refused
from .test_platform import webhook

NUMBER = "+15555550100"


def test_a_direct_sms_id_names_its_number_and_no_endpoint():
    assert direct_sms_number(direct_sms_id("+1-555-555-0100")) == NUMBER
    assert direct_sms_number(direct_sms_id("999999999999999")) == "+999999999999999"  # 15 digits, the most E.164 has
    assert direct_sms_id("999999999999999") < 1 << 64  # a push key's field
    assert direct_sms_number(DIRECT_SMS_ID_BASE - 1) is None  # a platform endpoint's id


async def test_a_publish_to_a_phone_number_reaches_the_sink_with_its_sms_payload(autojump_clock):
    async with trio_endpoint() as sink, running_broker(pusher=webhook(sink.url)) as h:
        plain = await h.ok(PublishToPhoneNumber("+1-555-555-0100", "disk full"))
        assert isinstance(plain, PublishedMessage)
        structured = await h.ok(
            PublishToPhoneNumber(NUMBER, json.dumps({"default": "long", "sms": "short"}), message_structure="json")
        )
        delivered = [pushed.json() for pushed in await sink.wait_for(2)]
        assert sorted((d["messageId"], d["message"]) for d in delivered) == sorted(
            [(plain.message_id, "disk full"), (structured.message_id, "short")]
        )
        assert {(d["protocol"], d["endpoint"], d["topicArn"], d["subscriptionArn"]) for d in delivered} == {("sms", NUMBER, "", "")}
        await trio.sleep(1)
        # The log tells each delivery's story, naming the number.
        queued = [r for _, r in h.store.read_log() if isinstance(r, PushQueued)]
        assert {(r.topic_id, r.topic, r.subscription_id) for r in queued} == {(DIRECT_PUSHES, NUMBER, direct_sms_id(NUMBER))}
        assert sorted(r.outcome for _, r in h.store.read_log() if isinstance(r, PushDone)) == ["delivered", "delivered"]


async def test_a_publish_to_a_phone_number_is_retried_and_resumed_after_a_restart(autojump_clock):
    store = MemoryStore()
    async with trio_endpoint(lambda pushed: 503) as sink, running_broker(store, pusher=webhook(sink.url)) as h:
        sent = (await h.ok(PublishToPhoneNumber(NUMBER, "wake up"))).message_id
        await sink.wait_for(2)  # the first attempt and a retry of AWS's policy for SMS (10 s later)
    assert [r.outcome for _, r in store.read_log() if isinstance(r, PushAttempted)][-1] == "HTTP 503"
    # Restarted, the broker rebuilds the number's delivery actor from the stored push alone.
    async with trio_endpoint() as sink, running_broker(store, pusher=webhook(sink.url)) as h:
        (delivery,) = await sink.wait_for(1)
        assert (delivery.json()["endpoint"], delivery.json()["message"], delivery.json()["messageId"]) == (NUMBER, "wake up", sent)
        await trio.sleep(1)
        assert [r.outcome for _, r in store.read_log() if isinstance(r, PushDone)] == ["delivered"]
        assert store.load_platform().pushes == []


def sms_attribute(data_type: str, value: str) -> MessageAttributeValue:
    return MessageAttributeValue(data_type, value)


async def test_a_publish_to_a_phone_number_is_refused_as_aws_refuses_it(autojump_clock):
    async with running_broker() as h:  # no sink
        with pytest.raises(BrokerError, match="mobile_sink_url or mobile_sink_command"):
            await h.ok(PublishToPhoneNumber(NUMBER, "hi"))
    async with trio_endpoint() as sink, running_broker(pusher=webhook(sink.url)) as h:
        for number in ("+15--551234567", "555-CALL-NOW", "", "+1234567890123456"):
            with pytest.raises(BrokerError) as refused_number:
                await h.ok(PublishToPhoneNumber(number, "hi"))
            assert (refused_number.value.code, refused_number.value.message) == (
                "InvalidParameter", "Invalid parameter: Phone number does not meet the E164 format",
            )
        with pytest.raises(BrokerError, match="at most 1600 characters"):
            await h.ok(PublishToPhoneNumber(NUMBER, "x" * 1601))
        with pytest.raises(BrokerError, match="Empty message"):
            await h.ok(PublishToPhoneNumber(NUMBER, ""))
        for attributes, reason in [
            ({"AWS.SNS.SMS.SMSType": sms_attribute("String", "Urgent")}, "must be Promotional or Transactional"),
            ({"AWS.SNS.SMS.SenderID": sms_attribute("String", "my sender")}, "1 to 11 letters and digits"),
            ({"AWS.SNS.SMS.MaxPrice": sms_attribute("String", "0.50")}, "must be of type 'Number'"),
        ]:
            with pytest.raises(BrokerError, match=reason) as refused_attribute:
                await h.ok(PublishToPhoneNumber(NUMBER, "hi", message_attributes=attributes))
            assert refused_attribute.value.code == "ParameterValueInvalid"
        fine = {
            "AWS.SNS.SMS.SMSType": sms_attribute("String", "Transactional"), "AWS.SNS.SMS.SenderID": sms_attribute("String", "Dovecote"),
            "AWS.SNS.SMS.MaxPrice": sms_attribute("Number", "0.50"),
        }
        await h.ok(PublishToPhoneNumber(NUMBER, "1600 is fine " + "x" * 1587, message_attributes=fine))
        (delivered,) = await sink.wait_for(1)
        assert len(delivered.json()["message"]) == 1600


async def test_publishing_to_a_phone_number_is_authorised_as_sns_publish(autojump_clock):
    texter = key("texter", allow("sns:Publish"))
    other = key("other", allow("sns:CreateSMSSandboxPhoneNumber"))
    async with trio_endpoint() as sink, running_broker(pusher=webhook(sink.url)) as h:
        assert isinstance(await call(h, texter, PublishToPhoneNumber(NUMBER, "hi")), PublishedMessage)
        assert (await refused(h, other, PublishToPhoneNumber(NUMBER, "hi"))).code == "AuthorizationError"
        assert (await refused(h, texter, CreateSMSSandboxPhoneNumber(NUMBER))).code == "AuthorizationError"
        assert await call(h, other, CreateSMSSandboxPhoneNumber(NUMBER)) == Done()


def password_in(pushed) -> str:
    message = pushed.json()["message"]
    assert message.startswith("Your verification code is ")
    return message.rsplit(" ", 1)[1]


async def test_a_sandbox_number_is_texted_a_password_verified_by_it_and_kept_through_a_restart(autojump_clock):
    store = MemoryStore()
    async with trio_endpoint() as sink, running_broker(store, pusher=webhook(sink.url)) as h:
        assert await h.ok(CreateSMSSandboxPhoneNumber("+1-555-555-0100", "en-US")) == Done()
        (texted,) = await sink.wait_for(1)
        assert texted.json()["endpoint"] == NUMBER
        password = password_in(texted)
        assert len(password) == 6 and password.isdigit()
        wrong = f"{(int(password) + 1) % 10**6:06d}"
        with pytest.raises(BrokerError) as refused_password:
            await h.ok(VerifySMSSandboxPhoneNumber(NUMBER, wrong))
        assert (refused_password.value.code, refused_password.value.message) == ("VerificationException", "Invalid one-time password")
        listed = await h.ok(ListSMSSandboxPhoneNumbers())
        assert listed.phone_numbers == [SandboxPhoneNumber(NUMBER, "Pending")]
    # The number and its password are in the store: a restarted broker verifies it.
    async with trio_endpoint() as sink, running_broker(store, pusher=webhook(sink.url)) as h:
        assert (await h.ok(ListSMSSandboxPhoneNumbers())).phone_numbers == [SandboxPhoneNumber(NUMBER, "Pending")]
        assert await h.ok(VerifySMSSandboxPhoneNumber(NUMBER, password)) == Done()
        assert await h.ok(CreateSMSSandboxPhoneNumber(NUMBER)) == Done()  # verified already: nothing texted
        await trio.sleep(60)
        assert sink.requests == []
    async with running_broker(store) as h:
        assert (await h.ok(ListSMSSandboxPhoneNumbers())).phone_numbers == [SandboxPhoneNumber(NUMBER, "Verified")]
        assert await h.ok(DeleteSMSSandboxPhoneNumber(NUMBER)) == Done()
        with pytest.raises(BrokerError) as refused_delete:
            await h.ok(DeleteSMSSandboxPhoneNumber(NUMBER))
        assert (refused_delete.value.code, refused_delete.value.message) == (
            "ResourceNotFound", f"The phone number {NUMBER} is not in the SMS sandbox",
        )
    async with running_broker(store) as h:
        assert (await h.ok(ListSMSSandboxPhoneNumbers())).phone_numbers == []
    kinds = [type(r).__name__ for _, r in store.read_log() if isinstance(r, (SMSSandboxNumberChanged, SMSSandboxNumberDeleted))]
    assert kinds == ["SMSSandboxNumberChanged", "SMSSandboxNumberChanged", "SMSSandboxNumberDeleted"]


async def test_a_pending_sandbox_number_added_again_is_texted_a_new_password(autojump_clock):
    async with trio_endpoint() as sink, running_broker(pusher=webhook(sink.url)) as h:
        await h.ok(CreateSMSSandboxPhoneNumber(NUMBER))
        await sink.wait_for(1)
        await h.ok(CreateSMSSandboxPhoneNumber(NUMBER))
        first, second = [password_in(pushed) for pushed in await sink.wait_for(2)]
        if first != second:  # one in a million draws the same again
            with pytest.raises(BrokerError, match="Invalid one-time password"):
                await h.ok(VerifySMSSandboxPhoneNumber(NUMBER, first))
        assert await h.ok(VerifySMSSandboxPhoneNumber(NUMBER, second)) == Done()


async def test_the_sandbox_lists_in_pages_and_holds_ten_numbers(autojump_clock):
    async with trio_endpoint() as sink, running_broker(pusher=webhook(sink.url)) as h:
        numbers = [f"+1555555{n:04d}" for n in range(10)]
        for number in reversed(numbers):
            await h.ok(CreateSMSSandboxPhoneNumber(number))
        with pytest.raises(BrokerError) as refused_eleventh:
            await h.ok(CreateSMSSandboxPhoneNumber("+15555559999"))
        assert (refused_eleventh.value.code, refused_eleventh.value.message) == (
            "UserError", "The SMS sandbox holds at most 10 phone numbers",
        )
        listed, token = [], None
        while True:
            page = await h.ok(ListSMSSandboxPhoneNumbers(token, 4))
            assert len(page.phone_numbers) <= 4
            listed += page.phone_numbers
            token = page.next_token
            if token is None:
                break
        assert listed == [SandboxPhoneNumber(number, "Pending") for number in numbers]
        for size in (0, 101):
            with pytest.raises(BrokerError, match="MaxResults Reason"):
                await h.ok(ListSMSSandboxPhoneNumbers(max_results=size))
        with pytest.raises(BrokerError, match="NextToken"):
            await h.ok(ListSMSSandboxPhoneNumbers("not a token of ours"))


async def test_sandbox_calls_are_refused_as_aws_refuses_them(autojump_clock):
    async with running_broker() as h:  # no sink: no password can be texted
        with pytest.raises(BrokerError, match="mobile_sink_url or mobile_sink_command"):
            await h.ok(CreateSMSSandboxPhoneNumber(NUMBER))
    async with trio_endpoint() as sink, running_broker(pusher=webhook(sink.url)) as h:
        for op, code, reason in [
            (CreateSMSSandboxPhoneNumber("555-CALL-NOW"), "InvalidParameter", "PhoneNumber Reason: input incorrectly formatted"),
            (CreateSMSSandboxPhoneNumber(NUMBER, "xx-XX"), "InvalidParameter", "LanguageCode Reason"),
            (VerifySMSSandboxPhoneNumber(NUMBER, "123456"), "ResourceNotFound", "is not in the SMS sandbox"),
            (VerifySMSSandboxPhoneNumber(NUMBER, "12ab56"), "InvalidParameter", "OneTimePassword Reason"),
            (DeleteSMSSandboxPhoneNumber("555-CALL-NOW"), "ResourceNotFound", "is not in the SMS sandbox"),
        ]:
            with pytest.raises(BrokerError, match=reason) as refused_call:
                await h.ok(op)
            assert refused_call.value.code == code
        assert sink.requests == []


async def test_a_topic_publish_may_carry_sns_reserved_sms_attributes_but_no_other_aws_name(autojump_clock):
    from dovecote.actors.ops import CreateTopic, Publish, Subscribe

    async with trio_endpoint() as sink, running_broker(pusher=webhook(sink.url)) as h:
        await h.ok(CreateTopic("alerts"))
        await h.ok(Subscribe("alerts", "sms", NUMBER))
        sms_type = {"AWS.SNS.SMS.SMSType": sms_attribute("String", "Transactional")}
        assert isinstance(await h.ok(Publish("alerts", "disk full", message_attributes=sms_type)), PublishedMessage)
        (delivered,) = await sink.wait_for(1)
        assert (delivered.json()["endpoint"], delivered.json()["message"]) == (NUMBER, "disk full")
        with pytest.raises(BrokerError, match="attribute name 'AWS.Colour' is invalid") as refused_name:
            await h.ok(Publish("alerts", "hi", message_attributes={"AWS.Colour": sms_attribute("String", "red")}))
        assert refused_name.value.code == "ParameterValueInvalid"


async def test_a_direct_publish_sharing_its_group_commit_with_later_records_is_delivered(autojump_clock):
    """The writer may commit others' records after the publish's in the same transaction: the push
    is named by its own seq, not the commit's last one (it was lost until the next restart)."""
    from dovecote.storage.records import MessageForwarded

    async with trio_endpoint() as sink, running_broker(pusher=webhook(sink.url), commit_delay_s=1.0) as h:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(h.ok, PublishToPhoneNumber(NUMBER, "hi"))
            await trio.sleep(0.5)  # the publish waits in the writer's commit delay
            h.writer.submit([MessageForwarded(0, "shovel", "queue", "id", "remote", "remote-id", "up")], needs_space=False)
        (delivered,) = await sink.wait_for(1)
        assert delivered.json()["message"] == "hi"


async def test_a_numbers_delivery_actor_ends_once_idle_and_another_serves_its_next_sms(autojump_clock):
    """A broker texting many numbers keeps no actor (and no connections) for those with nothing on
    the way; the counts of those that ended are kept."""
    async with trio_endpoint() as sink, running_broker(pusher=webhook(sink.url)) as h:
        for n in range(5):
            await h.ok(PublishToPhoneNumber(f"+1555555010{n}", "hi"))
        await sink.wait_for(5)
        await trio.sleep(1)
        statistics = h.broker.platform_report().actor
        assert (statistics.delivery_actors, statistics.pending_pushes) == (0, 0)
        assert statistics.deliveries == (("sms", "delivered", 5),)
        await h.ok(PublishToPhoneNumber(NUMBER, "again"))
        assert [pushed.json()["message"] for pushed in await sink.wait_for(6)][-1] == "again"
        await trio.sleep(1)
        assert h.broker.platform_report().actor.deliveries == (("sms", "delivered", 6),)
        assert h.broker.platform_report().actor.delivery_actors == 0
