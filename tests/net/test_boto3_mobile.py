"""SMS and mobile push from a real `dovecote serve`, driven by unmodified boto3: a real local HTTP
server as the webhook sink, a real script as the command sink, retries and the dead-letter queue
after the sink fails, and the deliveries' story in `dovecote log`; Publish to a PhoneNumber, and the
SMS sandbox's numbers through kill -9s."""

import json
import stat
import subprocess
import sys
import urllib.request
from uuid import UUID

import pytest

from dovecote.actors.ops import CheckIfPhoneNumberIsOptedOut, GetSMSSandboxAccountStatus, OptedOut, SandboxStatus

from ..faults.serve import ServeProcess
from ..faults.test_push_process import wait_until
from ..push_endpoint import ThreadedEndpoint
from .test_boto3_platform import error_of, pushes_in_the_log
from .test_boto3_sns import client

ENDPOINT = "arn:aws:sns:us-east-1:000000000000:endpoint/APNS/my-app/4b5c6d7e-0000-4000-8000-000000000001"


def serving(broker: ServeProcess) -> str:
    broker.start()
    return f"http://127.0.0.1:{broker.http_port}"


def test_sms_subscription_delivers_to_the_webhook_retries_and_dead_letters(tmp_path):
    data_dir = tmp_path / "data"
    with ThreadedEndpoint().running() as gateway:
        broker = ServeProcess(data_dir, "--mobile-sink-url", gateway.url)
        url = serving(broker)
        try:
            sns, sqs = client(url, "sns"), client(url, "sqs")
            topic = sns.create_topic(Name="alerts")["TopicArn"]
            with pytest.raises(sns.exceptions.InvalidParameterException, match="Invalid SMS endpoint: \\+15--551234567"):
                sns.subscribe(TopicArn=topic, Protocol="sms", Endpoint="+15--551234567")
            arn = sns.subscribe(TopicArn=topic, Protocol="sms", Endpoint="+15555550100")["SubscriptionArn"]
            assert arn.startswith(topic + ":")  # confirmed at once
            (listed,) = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
            assert (listed["SubscriptionArn"], listed["Protocol"], listed["Endpoint"]) == (arn, "sms", "+15555550100")
            sent = sns.publish(TopicArn=topic, Message="disk full on host-1")["MessageId"]
            wait_until(lambda: gateway.received())
            (delivery,) = gateway.received()
            assert delivery.json() == {
                "protocol": "sms", "endpoint": "+15555550100", "message": "disk full on host-1", "messageId": sent,
                "topicArn": topic, "subscriptionArn": arn,
            }

            dlq = sqs.create_queue(QueueName="sms-dlq")["QueueUrl"]
            dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            policy = {"healthyRetryPolicy": {"minDelayTarget": 1, "maxDelayTarget": 1, "numRetries": 2}}
            sns.set_subscription_attributes(SubscriptionArn=arn, AttributeName="DeliveryPolicy", AttributeValue=json.dumps(policy))
            sns.set_subscription_attributes(
                SubscriptionArn=arn, AttributeName="RedrivePolicy", AttributeValue=json.dumps({"deadLetterTargetArn": dlq_arn})
            )
            gateway.status = 502
            failed = sns.publish(TopicArn=topic, Message="the gateway is down")["MessageId"]
            (dead,) = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=10)["Messages"]
            assert dead["Body"] == "the gateway is down"
            assert [r.json()["messageId"] for r in gateway.received()] == [sent, failed, failed, failed]
            with urllib.request.urlopen(url + "/metrics") as response:
                metrics = response.read().decode()
            for outcome, count in [("delivered", 1), ("retried", 2), ("dead_lettered", 1)]:
                assert f'topic="alerts",protocol="sms",outcome="{outcome}"}} {count}' in metrics
        finally:
            assert broker.terminate() == 0
    history = subprocess.run(
        [sys.executable, "-m", "dovecote", "log", "--data-dir", str(data_dir), "--subscription", arn, "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    records = [json.loads(line) for line in history.stdout.splitlines()]
    stories = {(r["kind"], r["message_id"], r.get("outcome")) for r in records if r["kind"].startswith("Push")}
    assert stories >= {
        ("PushQueued", sent, None), ("PushDone", sent, "delivered"),
        ("PushQueued", failed, None), ("PushAttempted", failed, "HTTP 502"), ("PushDone", failed, "dead-lettered"),
    }


def test_application_subscription_runs_the_command_sink_with_its_platform_payload(tmp_path):
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    program = tmp_path / "send-push"
    # One file per delivery, named by its message id: the payload, then the details.
    program.write_text('#!/bin/sh\nout="$1/$DOVECOTE_MESSAGE_ID"\ncat > "$out"\necho "\n$DOVECOTE_PROTOCOL $DOVECOTE_ENDPOINT" >> "$out"\n')
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    broker = ServeProcess(tmp_path / "data", "--mobile-sink-command", f"{program} {outbox}")
    url = serving(broker)
    try:
        sns = client(url, "sns")
        topic = sns.create_topic(Name="news")["TopicArn"]
        app = sns.create_platform_application(Name="my-app", Platform="APNS", Attributes={"PlatformCredential": "key"})
        device = sns.create_platform_endpoint(PlatformApplicationArn=app["PlatformApplicationArn"], Token="t")["EndpointArn"]
        sns.subscribe(TopicArn=topic, Protocol="application", Endpoint=device)
        apns = json.dumps({"aps": {"alert": "breaking"}})
        sent = sns.publish(
            TopicArn=topic, MessageStructure="json", Message=json.dumps({"default": "breaking", "APNS": apns, "GCM": "{}"})
        )["MessageId"]
        wait_until(lambda: (outbox / sent).exists() and (outbox / sent).read_text().endswith("\n"))
        assert (outbox / sent).read_text() == f"{apns}\napplication {device}\n"
    finally:
        assert broker.terminate() == 0


def test_sms_without_a_sink_says_which_setting_is_missing(tmp_path):
    broker = ServeProcess(tmp_path / "data")
    url = serving(broker)
    try:
        sns = client(url, "sns")
        topic = sns.create_topic(Name="alerts")["TopicArn"]
        for protocol, endpoint in [("sms", "+15555550100"), ("application", ENDPOINT)]:
            with pytest.raises(sns.exceptions.InvalidParameterException, match="mobile_sink_url or mobile_sink_command"):
                sns.subscribe(TopicArn=topic, Protocol=protocol, Endpoint=endpoint)
        with pytest.raises(sns.exceptions.InvalidParameterException, match="mobile_sink_url or mobile_sink_command"):
            sns.publish(PhoneNumber="+15555550100", Message="hi")
        with pytest.raises(sns.exceptions.InvalidParameterException, match="mobile_sink_url or mobile_sink_command"):
            sns.create_sms_sandbox_phone_number(PhoneNumber="+15555550100")
    finally:
        assert broker.terminate() == 0


def test_publish_to_a_phone_number_reaches_the_webhook_with_its_story_in_the_log(tmp_path):
    """A direct SMS, with AWS's SMS attributes, through a real HTTP gateway; bad numbers and
    attributes refused as AWS refuses them, the broker serving on."""
    data_dir = tmp_path / "data"
    with ThreadedEndpoint().running() as gateway:
        broker = ServeProcess(data_dir, "--mobile-sink-url", gateway.url)
        url = serving(broker)
        try:
            sns = client(url, "sns")
            attributes = {
                "AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Transactional"},
                "AWS.SNS.SMS.SenderID": {"DataType": "String", "StringValue": "Dovecote"},
            }
            sent = sns.publish(PhoneNumber="+15555550100", Message="your code is 1234", MessageAttributes=attributes)["MessageId"]
            assert UUID(sent).version == 4  # a MessageId as AWS gives it
            wait_until(lambda: gateway.received())
            (delivery,) = gateway.received()
            assert delivery.json() == {
                "protocol": "sms", "endpoint": "+15555550100", "message": "your code is 1234", "messageId": sent,
                "topicArn": "", "subscriptionArn": "",
            }
            with pytest.raises(sns.exceptions.InvalidParameterException) as raised:
                sns.publish(PhoneNumber="+15--551234567", Message="hi")
            assert error_of(raised) == ("InvalidParameter", "Invalid parameter: Phone number does not meet the E164 format")
            with pytest.raises(sns.exceptions.InvalidParameterValueException, match="AWS.SNS.SMS.SMSType"):
                sns.publish(
                    PhoneNumber="+15555550100", Message="hi",
                    MessageAttributes={"AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Urgent"}},
                )
            with pytest.raises(sns.exceptions.InvalidParameterException, match="TargetArn Reason: No endpoint found for the target arn"):
                sns.publish(TargetArn=ENDPOINT, Message="hi")
            topic = sns.create_topic(Name="alongside")["TopicArn"]
            with pytest.raises(sns.exceptions.InvalidParameterException, match="Only one of TopicArn, TargetArn or PhoneNumber"):
                sns.publish(PhoneNumber="+15555550100", TopicArn=topic, Message="hi")  # neither is sent
            assert len(gateway.received()) == 1

            def metrics() -> str:
                with urllib.request.urlopen(url + "/metrics") as response:
                    return response.read().decode()

            # counted once the gateway's answer is read, a moment after the gateway has the request
            wait_until(lambda: 'dovecote_platform_deliveries_total{protocol="sms",outcome="delivered"} 1' in metrics())
            assert "dovecote_platform_pushes_pending 0" in metrics()
        finally:
            assert broker.terminate() == 0
    assert pushes_in_the_log(data_dir, sent) == [("PushQueued", None), ("PushDone", "delivered")]


def test_the_sms_sandbox_texts_a_password_verifies_it_and_keeps_its_numbers_through_a_kill_9(tmp_path):
    data_dir = tmp_path / "data"
    with ThreadedEndpoint().running() as gateway:
        broker = ServeProcess(data_dir, "--mobile-sink-url", gateway.url)
        try:
            sns = client(serving(broker), "sns")
            sns.create_sms_sandbox_phone_number(PhoneNumber="+15555550100", LanguageCode="en-US")
            sns.create_sms_sandbox_phone_number(PhoneNumber="+15555550101")
            wait_until(lambda: len(gateway.received()) == 2)
            texted = {r.json()["endpoint"]: r.json()["message"].rsplit(" ", 1)[1] for r in gateway.received()}
            password = texted["+15555550100"]
            with pytest.raises(sns.exceptions.VerificationException) as raised:
                sns.verify_sms_sandbox_phone_number(PhoneNumber="+15555550100", OneTimePassword=f"{(int(password) + 1) % 10**6:06d}")
            assert error_of(raised) == ("VerificationException", "Invalid one-time password")
            broker.kill9()
            sns = client(serving(broker), "sns")
            sns.verify_sms_sandbox_phone_number(PhoneNumber="+15555550100", OneTimePassword=password)
            pages = sns.get_paginator("list_sms_sandbox_phone_numbers").paginate(PaginationConfig={"PageSize": 1})
            assert [number for page in pages for number in page["PhoneNumbers"]] == [
                {"PhoneNumber": "+15555550100", "Status": "Verified"}, {"PhoneNumber": "+15555550101", "Status": "Pending"},
            ]
            sns.delete_sms_sandbox_phone_number(PhoneNumber="+15555550101")
            with pytest.raises(sns.exceptions.ResourceNotFoundException) as raised:
                sns.delete_sms_sandbox_phone_number(PhoneNumber="+15555550101")
            assert error_of(raised) == ("ResourceNotFound", "The phone number +15555550101 is not in the SMS sandbox")
            with pytest.raises(sns.exceptions.ResourceNotFoundException):
                sns.verify_sms_sandbox_phone_number(PhoneNumber="+15555550101", OneTimePassword=texted["+15555550101"])
            with pytest.raises(sns.exceptions.InvalidParameterException, match="PhoneNumber Reason: input incorrectly formatted"):
                sns.create_sms_sandbox_phone_number(PhoneNumber="555-CALL-NOW")
            with pytest.raises(sns.exceptions.InvalidParameterException, match="MaxResults Reason"):
                sns.list_sms_sandbox_phone_numbers(MaxResults=101)
            broker.kill9()
            sns = client(serving(broker), "sns")
            assert sns.list_sms_sandbox_phone_numbers()["PhoneNumbers"] == [{"PhoneNumber": "+15555550100", "Status": "Verified"}]
            assert sns.get_sms_sandbox_account_status()["IsInSandbox"] is False  # the numbers restrict nothing here
        finally:
            assert broker.terminate() == 0


def test_the_sms_account_calls_answer_as_aws_for_an_account_out_of_the_sandbox(tmp_path):
    """boto3's calls and the native protocol's operations, against a broker without a sink."""
    broker = ServeProcess(tmp_path / "data")
    url = serving(broker)
    try:
        sns = client(url, "sns")
        assert sns.check_if_phone_number_is_opted_out(phoneNumber="+15555550100")["isOptedOut"] is False
        assert sns.opt_in_phone_number(phoneNumber="+15555550100")["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert sns.list_phone_numbers_opted_out()["phoneNumbers"] == []
        assert sns.list_origination_numbers()["PhoneNumbers"] == []
        assert sns.get_sms_sandbox_account_status()["IsInSandbox"] is False
        with pytest.raises(sns.exceptions.InvalidParameterException, match="PhoneNumber Reason: input incorrectly formatted"):
            sns.check_if_phone_number_is_opted_out(phoneNumber="555-CALL-NOW")
        assert sns.list_topics()["Topics"] == []  # still serving
        with broker.client() as native:  # the same answers over the native protocol
            assert native.call(CheckIfPhoneNumberIsOptedOut("+15555550100")) == OptedOut(False)
            assert native.call(GetSMSSandboxAccountStatus()) == SandboxStatus(False)
    finally:
        assert broker.terminate() == 0
