"""email and email-json subscriptions through a real SMTP server (aiosmtpd, in a thread of its
own), on the real clock: the confirmation mail with its link, notifications with the unsubscribe
link, the JSON envelope for email-json, and a clear refusal when no relay is configured."""

import email
import email.policy
import json
import re

import pytest
import trio
from aiosmtpd.controller import Controller

from dovecote.actors.errors import BrokerError
from dovecote.actors.ops import ConfirmSubscription, CreateTopic, GetSubscriptionAttributes, Publish, Subscribe
from dovecote.net.http_push import Pusher, SmtpRelay

from ..conftest import running_broker
from ..push_endpoint import unused_port_url


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"


@pytest.fixture
def smtp_server():
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=int(unused_port_url().split(":")[2].split("/")[0]))
    controller.start()
    yield controller, mailbox
    controller.stop()


async def arrived(mailbox: Mailbox, count: int) -> list[email.message.Message]:
    with trio.fail_after(10):
        while len(mailbox.messages) < count:
            await trio.sleep(0.01)
    return mailbox.messages


async def test_email_subscriptions_confirm_by_link_and_receive_mail(smtp_server):
    controller, mailbox = smtp_server
    relay = SmtpRelay("127.0.0.1", controller.port, sender="alerts@example.com")
    async with running_broker(pusher=Pusher(relay)) as h:
        await h.ok(CreateTopic("t"))
        assert (await h.ok(Subscribe("t", "email", "ops@example.com"))).arn == "pending confirmation"
        (confirmation,) = await arrived(mailbox, 1)
        assert confirmation["To"] == "ops@example.com" and confirmation["From"] == "alerts@example.com"
        assert confirmation["Subject"] == "AWS Notification - Subscription Confirmation"
        link = re.search(r"http://\S+Action=ConfirmSubscription\S+", confirmation.get_content())[0]
        token = link.rsplit("Token=", 1)[1]
        arn = (await h.ok(ConfirmSubscription("t", token))).arn
        assert (await h.ok(GetSubscriptionAttributes("t", arn))).attributes["PendingConfirmation"] == "false"

        await h.ok(Publish("t", "the backup finished", subject="backup"))
        _, notice = await arrived(mailbox, 2)
        assert notice["Subject"] == "backup"
        text = notice.get_content()
        assert text.startswith("the backup finished") and f"SubscriptionArn={arn}" in text

        await h.ok(Subscribe("t", "email-json", "robot@example.com", return_subscription_arn=True))
        *_, json_confirmation = await arrived(mailbox, 3)
        token = json.loads(json_confirmation.get_content())["Token"]
        await h.ok(ConfirmSubscription("t", token))
        await h.ok(Publish("t", "as json"))
        await arrived(mailbox, 5)
        by_recipient = {m["To"]: m for m in mailbox.messages[3:]}
        envelope = json.loads(by_recipient["robot@example.com"].get_content())
        assert envelope["Type"] == "Notification" and envelope["Message"] == "as json"
        assert by_recipient["ops@example.com"].get_content().startswith("as json")


async def test_email_is_refused_without_a_relay():
    async with running_broker() as h:
        await h.ok(CreateTopic("t"))
        with pytest.raises(BrokerError) as error:
            await h.ok(Subscribe("t", "email", "ops@example.com"))
        assert error.value.code == "InvalidParameter" and "SMTP relay" in error.value.message
