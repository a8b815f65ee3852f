"""dovecote's pytest plugin, registered through the `pytest11` entry point: installing dovecote is
enough, nothing to list in a conftest.py.

One embedded broker serves the whole session (started when a test first asks for it, in a
temporary directory, on the controllable clock). Each test gets a namespace of its own without a
restart: a region no other test uses, which the broker keys every queue and topic by, so what one
test creates the next never sees. The AWS fixtures (dovecote_sqs, dovecote_sns, dovecote_aws_env)
act in that region. The native protocol names no region: dovecote_native acts in the broker's
default one, which the fixture empties before its test.

    def test_redelivery(dovecote_sqs, dovecote_clock):
        url = dovecote_sqs.create_queue(QueueName="jobs", Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
        ...
        dovecote_clock.advance(31)  # the timeout passes now, not in 31 s

Fixture names all begin with dovecote_, and importing this module loads nothing of the broker, so
the plugin costs a session that does not use it nothing.
"""

from __future__ import annotations

import secrets

import pytest

TEST_CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}  # not checked: the broker has no keys


@pytest.fixture(scope="session")
def dovecote_settings() -> dict[str, object]:
    """The session broker's settings, as dovecote.embedded takes them (none by default). A
    conftest.py overrides this fixture to change them: `return {"account_id": "123456789012"}`."""
    return {}


@pytest.fixture(scope="session")
def dovecote_broker(dovecote_settings):
    """The session's embedded broker (dovecote.embedded(clock="controllable", **dovecote_settings)):
    endpoint_url, native_address, data_dir, advance(seconds). Stopped, and its directory removed,
    at the end of the session."""
    from dovecote.embedded_broker import embedded

    with embedded(clock="controllable", **dovecote_settings) as broker:
        yield broker


@pytest.fixture
def dovecote_region() -> str:
    """This test's namespace: a region of the broker no other test uses."""
    return f"test-{secrets.token_hex(6)}"


@pytest.fixture
def dovecote_endpoint_url(dovecote_broker) -> str:
    """The broker's AWS API (SQS JSON and Query, SNS Query), for any SDK: http://127.0.0.1:PORT."""
    return dovecote_broker.endpoint_url


@pytest.fixture
def dovecote_clock(dovecote_broker):
    """The broker's clock: advance(seconds) moves its time forward at once (visibility timeouts,
    delays, retention, long polls, push retries, timestamps). It is the session's one clock, so an
    advance is seen by every namespace; each test's own queues are new, so that changes nothing for
    the tests after."""
    return dovecote_broker.clock


def _boto3_client(service: str, endpoint_url: str, region: str):
    boto3 = pytest.importorskip("boto3", reason=f"dovecote_{service} needs boto3, which is not installed")
    return boto3.client(service, endpoint_url=endpoint_url, region_name=region, **TEST_CREDENTIALS)


@pytest.fixture
def dovecote_sqs(dovecote_endpoint_url, dovecote_region):
    """A boto3 SQS client of this test's namespace (skips the test when boto3 is not installed)."""
    return _boto3_client("sqs", dovecote_endpoint_url, dovecote_region)


@pytest.fixture
def dovecote_sns(dovecote_endpoint_url, dovecote_region):
    """A boto3 SNS client of this test's namespace (skips the test when boto3 is not installed)."""
    return _boto3_client("sns", dovecote_endpoint_url, dovecote_region)


@pytest.fixture
def dovecote_aws_env(monkeypatch, dovecote_endpoint_url, dovecote_region) -> dict[str, str]:
    """The variables every AWS SDK reads, set for this test, so that code which makes its own clients
    (boto3.client("sqs") with no arguments) reaches the broker in this test's namespace. The
    per-service endpoint variables and the profile, which would win over them, are unset."""
    variables = {
        "AWS_ENDPOINT_URL": dovecote_endpoint_url,
        "AWS_DEFAULT_REGION": dovecote_region,
        "AWS_REGION": dovecote_region,
        "AWS_ACCESS_KEY_ID": TEST_CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": TEST_CREDENTIALS["aws_secret_access_key"],
    }
    for name in ("AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL_SNS", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return variables


@pytest.fixture
def dovecote_native(dovecote_broker):
    """A blocking native client (dovecote.net.client.BlockingClient) of the broker's default region,
    emptied of queues and topics before the test; closed after it."""
    from dovecote.net.client import BlockingClient

    with BlockingClient(*dovecote_broker.native_address) as client:
        while queues := client.list_queues().queues:
            for queue in queues:
                client.delete_queue(queue)
        while topics := client.list_topics().arns:
            for topic in topics:
                client.delete_topic(topic)
        yield client
