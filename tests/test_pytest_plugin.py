"""The pytest plugin, as an application's tests use it: a small sample project's tests, run by
pytester in a pytest of their own (the plugin found through its entry point, nothing configured)."""

from __future__ import annotations

import re
from pathlib import Path

pytest_plugins = ["pytester"]

README = Path(__file__).resolve().parent.parent / "README.md"

SAMPLE = '''
import os
import time

import boto3


def test_one_test_creates_a_queue_and_a_topic(dovecote_sqs, dovecote_sns):
    dovecote_sqs.create_queue(QueueName="orders")
    dovecote_sns.create_topic(Name="events")
    assert len(dovecote_sqs.list_queues()["QueueUrls"]) == 1


def test_the_next_sees_neither(dovecote_sqs, dovecote_sns):
    assert "QueueUrls" not in dovecote_sqs.list_queues()
    assert dovecote_sns.list_topics()["Topics"] == []


def test_a_visibility_timeout_passes_in_milliseconds(dovecote_sqs, dovecote_clock):
    url = dovecote_sqs.create_queue(QueueName="jobs", Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    dovecote_sqs.send_message(QueueUrl=url, MessageBody="work")
    first = dovecote_sqs.receive_message(QueueUrl=url)["Messages"][0]
    started = time.monotonic()
    dovecote_clock.advance(25)
    assert "Messages" not in dovecote_sqs.receive_message(QueueUrl=url)
    dovecote_clock.advance(6)
    again = dovecote_sqs.receive_message(QueueUrl=url)["Messages"][0]
    assert again["MessageId"] == first["MessageId"]
    assert time.monotonic() - started < 2


def test_application_code_reaches_the_broker_through_the_sdk_variables(dovecote_aws_env, dovecote_endpoint_url):
    url = boto3.client("sqs").create_queue(QueueName="made-by-the-app")["QueueUrl"]
    assert url.startswith(dovecote_endpoint_url) and os.environ["AWS_ENDPOINT_URL"] == dovecote_endpoint_url


def test_the_app_queue_is_this_tests_alone(dovecote_sqs):
    assert "QueueUrls" not in dovecote_sqs.list_queues()


def test_a_native_client(dovecote_native):
    dovecote_native.create_queue("native")
    dovecote_native.create_topic("native-topic")
    dovecote_native.send_message("native", "hello")
    assert [message.body for message in dovecote_native.receive_message("native")] == ["hello"]


def test_the_next_native_client_finds_neither(dovecote_broker, dovecote_native):
    from dovecote.net.client import BlockingClient

    with BlockingClient(*dovecote_broker.native_address) as other:  # not the fixture's own view
        assert other.list_queues().queues == [] and other.list_topics().arns == []
'''


def readme_plugin_example() -> str:
    """The README's example of the plugin: its ```python block of tests that use dovecote_sqs."""
    blocks = re.findall(r"^```python\n(.*?)^```$", README.read_text(), re.M | re.S)
    return next(block for block in blocks if "def test_" in block and "dovecote_sqs" in block)


def test_the_sample_projects_tests_are_isolated_and_fast(pytester):
    pytester.makepyfile(test_sample=SAMPLE, test_readme_example=readme_plugin_example())
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v")
    tests = len(re.findall(r"^def test_", SAMPLE + readme_plugin_example(), re.M))
    result.assert_outcomes(passed=tests)
    assert tests >= 8


def test_a_conftest_sets_the_session_brokers_settings(pytester):
    pytester.makeconftest(
        "import pytest\n\n@pytest.fixture(scope='session')\ndef dovecote_settings():\n    return {'account_id': '123456789012'}\n"
    )
    pytester.makepyfile(test_account="""
def test_arns_name_the_account(dovecote_sns):
    assert dovecote_sns.create_topic(Name="t")["TopicArn"].endswith(":123456789012:t")
""")
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_a_session_that_uses_no_fixture_starts_no_broker(pytester):
    pytester.makepyfile(test_plain="import sys\n\ndef test_plain():\n    assert 'dovecote.embedded_broker' not in sys.modules\n")
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
