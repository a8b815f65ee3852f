"""SNS platform applications and endpoints (mobile push) from a real `dovecote serve`, driven by
unmodified boto3: their calls and errors as AWS answers them, kept through a kill -9 (with the
account's SMS attributes), an
application subscription only to an endpoint that exists, and a publish to an endpoint delivered
through the webhook sink, through a kill -9, with its story in `dovecote log`."""

import json
import subprocess
import sys

import pytest

from dovecote.actors.errors import BrokerError
from dovecote.actors.ops import GetEndpointAttributes, ListPlatformApplications

from ..faults.serve import ServeProcess
from ..faults.test_push_process import wait_until
from ..push_endpoint import ThreadedEndpoint
from .test_boto3_sns import client


def serving(broker: ServeProcess) -> str:
    broker.start()
    return f"http://127.0.0.1:{broker.http_port}"


def error_of(raised: pytest.ExceptionInfo) -> tuple[str, str]:
    error = raised.value.response["Error"]
    return error["Code"], error["Message"]


def test_platform_applications_and_endpoints_are_kept_through_a_kill_9(tmp_path):
    broker = ServeProcess(tmp_path / "data")
    url = serving(broker)
    try:
        sns = client(url, "sns")
        app = sns.create_platform_application(
            Name="my-app", Platform="GCM", Attributes={"PlatformCredential": "server-key", "EventEndpointCreated": ""}
        )["PlatformApplicationArn"]
        assert app == "arn:aws:sns:us-east-1:000000000000:app/GCM/my-app"
        # The credential is not answered back (the operator's sink holds its own).
        assert sns.get_platform_application_attributes(PlatformApplicationArn=app)["Attributes"] == {
            "Enabled": "true", "EventEndpointCreated": "",
        }
        sns.set_platform_application_attributes(PlatformApplicationArn=app, Attributes={"SuccessFeedbackSampleRate": "50"})
        (listed,) = sns.list_platform_applications()["PlatformApplications"]
        assert listed["PlatformApplicationArn"] == app
        assert listed["Attributes"]["SuccessFeedbackSampleRate"] == "50"

        phone = sns.create_platform_endpoint(PlatformApplicationArn=app, Token="token-1", CustomUserData="alice's phone")
        endpoint = phone["EndpointArn"]
        assert endpoint.startswith("arn:aws:sns:us-east-1:000000000000:endpoint/GCM/my-app/")
        # The same token and attributes again: the same endpoint.
        again = sns.create_platform_endpoint(PlatformApplicationArn=app, Token="token-1", CustomUserData="alice's phone")
        assert again["EndpointArn"] == endpoint
        with pytest.raises(sns.exceptions.InvalidParameterException) as raised:
            sns.create_platform_endpoint(PlatformApplicationArn=app, Token="token-1", CustomUserData="bob's phone")
        assert error_of(raised) == (
            "InvalidParameter",
            f"Invalid parameter: Token Reason: Endpoint {endpoint} already exists with the same Token, but different attributes.",
        )
        sns.set_sms_attributes(attributes={"DefaultSMSType": "Transactional", "DefaultSenderID": "Dovecote"})
        sns.set_sms_attributes(attributes={"MonthlySpendLimit": "5"})
        with pytest.raises(sns.exceptions.InvalidParameterException, match="DefaultSMSType Reason: must be Promotional or Transactional"):
            sns.set_sms_attributes(attributes={"DefaultSMSType": "Urgent"})
        tablet = sns.create_platform_endpoint(PlatformApplicationArn=app, Token="token-2")["EndpointArn"]
        sns.set_endpoint_attributes(EndpointArn=tablet, Attributes={"Enabled": "false", "Token": "token-3"})
        assert sns.get_endpoint_attributes(EndpointArn=tablet)["Attributes"] == {"Enabled": "false", "Token": "token-3"}
        assert sns.get_endpoint_attributes(EndpointArn=endpoint)["Attributes"] == {
            "Enabled": "true", "Token": "token-1", "CustomUserData": "alice's phone",
        }
        broker.kill9()
        url = serving(broker)
        sns = client(url, "sns")
        assert sns.get_endpoint_attributes(EndpointArn=tablet)["Attributes"] == {"Enabled": "false", "Token": "token-3"}
        listed = sns.list_endpoints_by_platform_application(PlatformApplicationArn=app)["Endpoints"]
        assert sorted(e["EndpointArn"] for e in listed) == sorted([endpoint, tablet])
        assert sns.list_platform_applications()["PlatformApplications"][0]["Attributes"]["SuccessFeedbackSampleRate"] == "50"
        assert sns.get_sms_attributes()["attributes"] == {
            "DefaultSMSType": "Transactional", "DefaultSenderID": "Dovecote", "MonthlySpendLimit": "5",
        }
        assert sns.get_sms_attributes(attributes=["MonthlySpendLimit"])["attributes"] == {"MonthlySpendLimit": "5"}

        sns.delete_endpoint(EndpointArn=tablet)
        sns.delete_endpoint(EndpointArn=tablet)  # idempotent, as AWS documents it
        with pytest.raises(sns.exceptions.NotFoundException) as raised:
            sns.get_endpoint_attributes(EndpointArn=tablet)
        assert error_of(raised) == ("NotFound", "Endpoint does not exist")
        sns.delete_platform_application(PlatformApplicationArn=app)
        with pytest.raises(sns.exceptions.NotFoundException) as raised:
            sns.list_endpoints_by_platform_application(PlatformApplicationArn=app)
        assert error_of(raised) == ("NotFound", "PlatformApplication does not exist")
        with pytest.raises(sns.exceptions.NotFoundException):  # its endpoints went with it
            sns.get_endpoint_attributes(EndpointArn=endpoint)
        with broker.client() as native:  # the native protocol reaches the same actor
            assert native.call(ListPlatformApplications()).resources == []
            with pytest.raises(BrokerError) as refused:
                native.call(GetEndpointAttributes(endpoint))
            assert (refused.value.code, refused.value.message) == ("NotFound", "Endpoint does not exist")
        broker.kill9()
        sns = client(serving(broker), "sns")
        assert sns.list_platform_applications()["PlatformApplications"] == []
    finally:
        assert broker.terminate() == 0


def test_bad_platform_requests_get_aws_errors_and_the_broker_stays_up(tmp_path):
    broker = ServeProcess(tmp_path / "data")
    url = serving(broker)
    try:
        sns = client(url, "sns")
        refusals = [
            (dict(Name="app", Platform="FCM_V9", Attributes={"PlatformCredential": "k"}), "Platform Reason"),
            (dict(Name="bad name!", Platform="GCM", Attributes={"PlatformCredential": "k"}), "Name Reason"),
            (dict(Name="app", Platform="GCM", Attributes={}), "PlatformCredential attribute is required"),
            (dict(Name="app", Platform="GCM", Attributes={"PlatformCredential": "k", "Colour": "red"}), "Invalid attribute name: Colour"),
        ]
        for request, reason in refusals:
            with pytest.raises(sns.exceptions.InvalidParameterException, match=reason):
                sns.create_platform_application(**request)
        missing = "arn:aws:sns:us-east-1:000000000000:app/GCM/nowhere"
        with pytest.raises(sns.exceptions.NotFoundException, match="PlatformApplication does not exist"):
            sns.create_platform_endpoint(PlatformApplicationArn=missing, Token="t")
        with pytest.raises(sns.exceptions.NotFoundException, match="PlatformApplication does not exist"):
            sns.get_platform_application_attributes(PlatformApplicationArn=missing)
        app = sns.create_platform_application(Name="app", Platform="APNS", Attributes={"PlatformCredential": "k"})
        endpoint = sns.create_platform_endpoint(PlatformApplicationArn=app["PlatformApplicationArn"], Token="t")["EndpointArn"]
        with pytest.raises(sns.exceptions.InvalidParameterException, match="Enabled must be true or false"):
            sns.set_endpoint_attributes(EndpointArn=endpoint, Attributes={"Enabled": "maybe"})
        with pytest.raises(sns.exceptions.InvalidParameterException, match="Token Reason"):
            sns.set_endpoint_attributes(EndpointArn=endpoint, Attributes={"Token": ""})
        assert sns.get_endpoint_attributes(EndpointArn=endpoint)["Attributes"] == {"Enabled": "true", "Token": "t"}
    finally:
        assert broker.terminate() == 0


def test_an_application_subscription_needs_an_endpoint_that_exists(tmp_path):
    broker = ServeProcess(tmp_path / "data", "--mobile-sink-command", "true")
    url = serving(broker)
    try:
        sns = client(url, "sns")
        topic = sns.create_topic(Name="news")["TopicArn"]
        app = sns.create_platform_application(Name="app", Platform="APNS", Attributes={"PlatformCredential": "k"})
        endpoint = sns.create_platform_endpoint(PlatformApplicationArn=app["PlatformApplicationArn"], Token="t")["EndpointArn"]
        assert sns.subscribe(TopicArn=topic, Protocol="application", Endpoint=endpoint)["SubscriptionArn"].startswith(topic)
        sns.delete_endpoint(EndpointArn=endpoint)
        with pytest.raises(sns.exceptions.NotFoundException) as raised:
            sns.subscribe(TopicArn=topic, Protocol="application", Endpoint=endpoint)
        assert error_of(raised) == ("NotFound", "Endpoint does not exist")
        with pytest.raises(sns.exceptions.InvalidParameterException, match="Endpoint Reason"):
            sns.subscribe(TopicArn=topic, Protocol="application", Endpoint="not-an-arn")
    finally:
        assert broker.terminate() == 0



def registered(sns) -> str:
    app = sns.create_platform_application(Name="my-app", Platform="GCM", Attributes={"PlatformCredential": "k"})
    return sns.create_platform_endpoint(PlatformApplicationArn=app["PlatformApplicationArn"], Token="t")["EndpointArn"]


def pushes_in_the_log(data_dir, message_id: str) -> list[tuple[str, str | None]]:
    history = subprocess.run(
        [sys.executable, "-m", "dovecote", "log", "--data-dir", str(data_dir), "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    records = [json.loads(line) for line in history.stdout.splitlines()]
    return [(r["kind"], r.get("outcome")) for r in records if r["kind"].startswith("Push") and r.get("message_id") == message_id]


def test_a_publish_to_an_endpoint_reaches_the_webhook_with_its_platform_payload(tmp_path):
    data_dir = tmp_path / "data"
    with ThreadedEndpoint().running() as gateway:
        broker = ServeProcess(data_dir, "--mobile-sink-url", gateway.url)
        try:
            sns = client(serving(broker), "sns")
            device = registered(sns)
            gcm = json.dumps({"notification": {"title": "hi"}})
            sent = sns.publish(TargetArn=device, MessageStructure="json", Message=json.dumps({"default": "hi", "GCM": gcm}))["MessageId"]
            wait_until(lambda: gateway.received())
            (delivered,) = [r.json() for r in gateway.received()]
            assert delivered == {
                "protocol": "application", "endpoint": device, "message": gcm, "messageId": sent, "topicArn": "", "subscriptionArn": "",
            }
            sns.set_endpoint_attributes(EndpointArn=device, Attributes={"Enabled": "false"})
            with pytest.raises(sns.exceptions.EndpointDisabledException, match="Endpoint is disabled"):
                sns.publish(TargetArn=device, Message="hi")
        finally:
            assert broker.terminate() == 0
    assert pushes_in_the_log(data_dir, sent) == [("PushQueued", None), ("PushDone", "delivered")]


@pytest.mark.long  # up to 12 s: AWS's policy retries 10 s after the failure
def test_a_publish_to_an_endpoint_reaches_the_webhook_through_a_kill_9(tmp_path):
    """The gateway fails the first attempt; the broker is killed; restarted, it retries the stored
    publish and the gateway takes it."""
    data_dir = tmp_path / "data"
    with ThreadedEndpoint().running() as gateway:
        broker = ServeProcess(data_dir, "--mobile-sink-url", gateway.url)
        try:
            sns = client(serving(broker), "sns")
            device = registered(sns)
            gateway.status = 503
            sent = sns.publish(TargetArn=device, Message="wake up")["MessageId"]
            wait_until(lambda: gateway.received())
            broker.kill9()
            gateway.status = 200
            serving(broker)
            wait_until(lambda: len(gateway.received()) == 2)
            assert [r.json()["messageId"] for r in gateway.received()] == [sent, sent]
        finally:
            assert broker.terminate() == 0
    # The failed attempt's PushAttempted is stored after it, so a kill may come first: the publish is
    # then sent again at once (at least once, as delivery.py promises).
    assert pushes_in_the_log(data_dir, sent) in (
        [("PushQueued", None), ("PushAttempted", "HTTP 503"), ("PushDone", "delivered")],
        [("PushQueued", None), ("PushDone", "delivered")],
    )
