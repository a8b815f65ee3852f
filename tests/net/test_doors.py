"""Every door checks, against a real `dovecote serve` with a key: one action per request (a second
`Action` is refused, so nothing rides on an unsigned confirmation), only SubscribeURLs and
UnsubscribeURLs unsigned, the broker's own endpoints behind a proof of a key (SigV4 or HTTP Basic)
but /health and the signing certificate, failures counted in /metrics."""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from urllib.parse import urlencode

import boto3
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from dovecote.actors.signing import CERTIFICATE_PATH

from ..faults.serve import ServeProcess
from ..push_endpoint import ThreadedEndpoint

KEY, SECRET = "AKIDDOORS", "d00rs3cret"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    process = ServeProcess(tmp_path_factory.mktemp("doors") / "data", "--access-key", f"{KEY}:{SECRET}").start()
    yield process
    assert process.terminate() == 0


@pytest.fixture(scope="module")
def endpoint(broker):
    """The broker's HTTP port, with a queue "peeked" holding a message "secret body"."""
    url = f"http://127.0.0.1:{broker.http_port}"
    sqs = client(url, "sqs")
    sqs.send_message(QueueUrl=sqs.create_queue(QueueName="peeked")["QueueUrl"], MessageBody="secret body")
    return url


def client(endpoint, service):
    return boto3.client(
        service, endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=KEY,
        aws_secret_access_key=SECRET, config=Config(retries={"max_attempts": 1}),
    )


def signed_get(url: str, service: str = "sqs", key: str = KEY, secret: str = SECRET) -> httpx.Response:
    """GET url, signed as `curl --aws-sigv4 aws:amz:us-east-1:SERVICE --user KEY:SECRET` signs it."""
    request = AWSRequest(method="GET", url=url)
    SigV4Auth(Credentials(key, secret), service, "us-east-1").add_auth(request)
    return httpx.get(url, headers=dict(request.headers))


def basic(key: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()}


def topics(endpoint) -> list[str]:
    return [t["TopicArn"].rsplit(":", 1)[1] for t in client(endpoint, "sns").list_topics()["Topics"]]


# One action per request ------------------------------------------------------------------------------

RIDERS = {
    "CreateTopic": {"Name": "ridden"},
    "DeleteTopic": {"TopicArn": "arn:aws:sns:us-east-1:000000000000:kept"},
    "Publish": {"TopicArn": "arn:aws:sns:us-east-1:000000000000:kept", "Message": "forged"},
    "Subscribe": {"TopicArn": "arn:aws:sns:us-east-1:000000000000:kept", "Protocol": "http", "Endpoint": "http://127.0.0.1:9/x"},
    "ListTopics": {},
    "ListSubscriptions": {},
    "CreateQueue": {"QueueName": "ridden"},
    "ListQueues": {},
}


@pytest.mark.parametrize("confirmation_first", [True, False], ids=["confirmation first", "confirmation last"])
@pytest.mark.parametrize("rider", sorted(RIDERS))
def test_no_action_rides_on_an_unsigned_confirmation(endpoint, rider, confirmation_first):
    """The hole: the exemption looked at one Action, the dispatch at another."""
    client(endpoint, "sns").create_topic(Name="kept")
    confirmation = [("Action", "ConfirmSubscription")]
    pairs = [*confirmation, ("Action", rider)] if confirmation_first else [("Action", rider), *confirmation]
    pairs += [("TopicArn", "arn:aws:sns:us-east-1:000000000000:kept"), ("Token", "f00d"), *RIDERS[rider].items()]
    for answer in (httpx.get(endpoint + "/?" + urlencode(pairs)), httpx.post(endpoint + "/", content=urlencode(pairs), headers=FORM)):
        assert answer.status_code == 400, answer.text
        assert b"<Code>InvalidQueryParameter</Code>" in answer.content
        assert b"Action" in answer.content
    assert "ridden" not in topics(endpoint) and "kept" in topics(endpoint)
    assert not any(url.endswith("/ridden") for url in client(endpoint, "sqs").list_queues().get("QueueUrls", []))


def test_a_repeated_action_is_refused_even_signed(endpoint):
    url = endpoint + "/?" + urlencode([("Action", "ListQueues"), ("Action", "CreateQueue"), ("QueueName", "twice")])
    answer = signed_get(url)
    assert answer.status_code == 400 and b"<Code>InvalidQueryParameter</Code>" in answer.content
    json_answer = httpx.post(
        endpoint + "/", content=b"{}",
        headers=[("X-Amz-Target", "AmazonSQS.ListQueues"), ("X-Amz-Target", "AmazonSQS.CreateQueue")],
    )
    assert json_answer.status_code == 400 and json_answer.json()["__type"].endswith("#InvalidQueryParameter")


@pytest.mark.parametrize(
    "extra",
    [{"Name": "ridden"}, {"Subject": "x"}, {"Protocol": "http"}, {"AuthenticateOnUnsubscribe": "true", "Message": "m"}],
)
def test_an_unsigned_confirmation_with_other_parameters_needs_a_signature(endpoint, extra):
    """A SubscribeURL carries TopicArn and Token: anything else makes it a request like any other."""
    params = {"Action": "ConfirmSubscription", "TopicArn": "arn:aws:sns:us-east-1:000000000000:kept", "Token": "f00d", **extra}
    answer = httpx.get(endpoint + "/", params=params)
    assert answer.status_code == 403 and b"MissingAuthenticationToken" in answer.content


def test_an_unsigned_unsubscribe_of_a_queue_subscription_is_refused(endpoint):
    """AWS: queue subscriptions need a signature to be deleted; the UnsubscribeURL of an SQS
    envelope does nothing unsigned."""
    sns, sqs = client(endpoint, "sns"), client(endpoint, "sqs")
    topic = sns.create_topic(Name="kept")["TopicArn"]
    url = sqs.create_queue(QueueName="doors-subscriber")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    subscription = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)["SubscriptionArn"]
    answer = httpx.get(endpoint + "/", params={"Action": "Unsubscribe", "SubscriptionArn": subscription})
    assert answer.status_code == 403 and b"<Code>AuthorizationError</Code>" in answer.content
    assert subscription in [s["SubscriptionArn"] for s in sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]]
    metrics = httpx.get(endpoint + "/metrics", headers=basic(KEY, SECRET)).text
    assert 'dovecote_access_denied_total{door="aws",action="Unsubscribe"}' in metrics


def test_subscribe_and_unsubscribe_urls_work_unsigned_for_an_http_subscription(endpoint):
    """The SubscribeURL confirms and the UnsubscribeURL unsubscribes, both without a signature, as
    an endpoint's owner visits them. The subscription's id is random, so knowing one message id or
    ARN of a topic does not give another's UnsubscribeURL."""
    sns = client(endpoint, "sns")
    topic = sns.create_topic(Name="pushed-doors")["TopicArn"]
    with ThreadedEndpoint().running() as pushes:
        arn = sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=pushes.url, ReturnSubscriptionArn=True)["SubscriptionArn"]
        confirmation = wait_for(pushes, "SubscriptionConfirmation").json()
        assert httpx.get(confirmation["SubscribeURL"]).status_code == 200
        message_id = sns.publish(TopicArn=topic, Message="to the endpoint")["MessageId"]
        notification = wait_for(pushes, "Notification").json()
        assert notification["UnsubscribeURL"].endswith("SubscriptionArn=" + arn)
        subscription_id = arn.rsplit(":", 1)[1]
        assert {message_id, confirmation["MessageId"]}.isdisjoint({subscription_id})
        neighbours = [f"{topic}:{neighbour}" for neighbour in neighbouring_ids(message_id, 50)]
        for guess in neighbours:  # an unknown ARN is answered as AWS answers it, with success
            assert httpx.get(endpoint + "/", params={"Action": "Unsubscribe", "SubscriptionArn": guess}).status_code == 200
        assert arn in [s["SubscriptionArn"] for s in sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]]
        assert httpx.get(notification["UnsubscribeURL"]).status_code == 200
        assert arn not in [s["SubscriptionArn"] for s in sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]]
        assert wait_for(pushes, "UnsubscribeConfirmation").json()["TopicArn"] == topic


def wait_for(endpoint: ThreadedEndpoint, message_type: str, timeout_s: float = 20):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [p for p in endpoint.received() if p.headers.get("x-amz-sns-message-type") == message_type]
        if found:
            return found[-1]
        time.sleep(0.02)
    raise AssertionError(f"no {message_type} arrived")


def neighbouring_ids(message_id: str, count: int) -> list[str]:
    """The ids a topic numbered before and after `message_id`, were ids a random base plus a
    scrambled counter (actors/ids.py's MessageIds)."""
    from dovecote.actors.ids import _MASK_128, _ODD_STEP

    value = int(message_id.replace("-", ""), 16)
    ids = []
    for step in range(-count, count + 1):
        h = f"{(value + step * _ODD_STEP) & _MASK_128:032x}"
        ids.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return ids


# The broker's own endpoints ------------------------------------------------------------------------------


def test_peek_shows_no_body_without_a_proof_of_a_key(endpoint):
    answer = httpx.get(endpoint + "/peek", params={"queue": "peeked"})
    assert answer.status_code == 401 and b"secret body" not in answer.content
    assert answer.headers["WWW-Authenticate"].startswith("Basic")
    assert b"secret body" in signed_get(endpoint + "/peek?queue=peeked").content
    assert b"secret body" in httpx.get(endpoint + "/peek?queue=peeked", headers=basic(KEY, SECRET)).content


@pytest.mark.parametrize("path", ["/peek?queue=peeked", "/actors", "/metrics", "/nothing-here"])
@pytest.mark.parametrize(
    "headers",
    [{}, basic(KEY, "wrong"), basic("AKIDNOBODY", SECRET), {"Authorization": "Basic !!!"}, {"Authorization": "Bearer x"}],
    ids=["none", "wrong secret", "unknown key", "not base64", "another scheme"],
)
def test_every_endpoint_that_shows_data_needs_a_proof(endpoint, path, headers):
    answer = httpx.get(endpoint + path, headers=headers)
    assert answer.status_code == 401, answer.text


@pytest.mark.parametrize("path", ["/peek?queue=peeked", "/actors", "/metrics"])
def test_a_wrong_signature_is_no_proof(endpoint, path):
    assert signed_get(endpoint + path, secret="wrong").status_code == 401
    assert signed_get(endpoint + path).status_code == 200


@pytest.mark.skipif(shutil.which("curl") is None, reason="no curl here")
def test_curl_signs_as_the_readme_says(endpoint):
    """`curl --aws-sigv4 aws:amz:us-east-1:sqs --user ID:SECRET URL`, as the README shows it."""
    signed = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--aws-sigv4", "aws:amz:us-east-1:sqs"]
    for path in ("/metrics", "/actors", "/peek?queue=peeked"):
        ok = subprocess.run([*signed, "--user", f"{KEY}:{SECRET}", endpoint + path], capture_output=True, text=True, timeout=30)
        assert ok.stdout == "200", (path, ok.stdout, ok.stderr)
        wrong = subprocess.run([*signed, "--user", f"{KEY}:wrong", endpoint + path], capture_output=True, text=True, timeout=30)
        assert wrong.stdout == "401"


def test_health_and_the_signing_certificate_stay_open(endpoint):
    assert httpx.get(endpoint + "/health").status_code == 200
    assert httpx.get(endpoint + CERTIFICATE_PATH).content.startswith(b"-----BEGIN CERTIFICATE-----")


def test_failures_are_counted_in_metrics(endpoint):
    httpx.get(endpoint + "/", params={"Action": "ListQueues"})
    httpx.get(endpoint + "/actors", headers=basic(KEY, "wrong"))
    text = httpx.get(endpoint + "/metrics", headers=basic(KEY, SECRET)).text
    counts = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("dovecote_auth_failures_total{")
    }
    assert counts['dovecote_auth_failures_total{door="aws",reason="MissingAuthenticationToken"}'] >= 1
    assert counts['dovecote_auth_failures_total{door="endpoints",reason="SignatureDoesNotMatch"}'] >= 1
    assert "# TYPE dovecote_access_denied_total counter" in text


def test_the_broker_still_serves_signed_clients(endpoint):
    sqs = client(endpoint, "sqs")
    url = sqs.create_queue(QueueName="still-served")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="hello")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        messages = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages", [])
        if messages:
            assert messages[0]["Body"] == "hello"
            return
    raise AssertionError("no message")


def test_a_flood_of_refused_requests_is_counted_whole_and_logged_in_a_few_lines(tmp_path):
    """The audit's rate limit, on a real broker: a thousand refused requests in about a second are
    all in /metrics, and a handful of log lines say so."""
    broker = ServeProcess(tmp_path / "data", "--access-key", "AKIDAUDIT:s3cret").start()
    endpoint = f"http://127.0.0.1:{broker.http_port}"
    started = time.monotonic()
    try:
        with httpx.Client() as client:
            for number in range(1000):
                credential = f"Credential=KEY{number}/20250101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=00"
                client.get(endpoint + "/", params={"Action": "ListQueues"}, headers={"Authorization": "AWS4-HMAC-SHA256 " + credential})
            for _ in range(100):
                assert client.get(endpoint + "/peek?queue=q", auth=("AKIDAUDIT", "guess")).status_code == 401
            metrics = client.get(endpoint + "/metrics", auth=("AKIDAUDIT", "s3cret")).text
    finally:
        assert broker.terminate() == 0
    elapsed_s = time.monotonic() - started
    assert 'dovecote_auth_failures_total{door="aws",reason="InvalidClientTokenId"} 1000' in metrics
    assert 'dovecote_auth_failures_total{door="endpoints",reason="SignatureDoesNotMatch"} 100' in metrics
    logged = [line for line in broker.process.stderr.read().splitlines() if "authentication failed" in line]
    lines = [line for line in logged if "at the aws door" in line]
    assert 1 <= len(lines) <= elapsed_s + 2, lines
    assert "from 127.0.0.1:" in lines[0] and "InvalidClientTokenId, key id 'KEY0'" in lines[0]
    if len(lines) > 1:
        assert "more like it in the last" in lines[1]
    endpoint_lines = [line for line in logged if "at the endpoints door" in line]
    assert 1 <= len(endpoint_lines) <= elapsed_s + 2, endpoint_lines
    assert "from 127.0.0.1:" in endpoint_lines[0] and "SignatureDoesNotMatch, key id 'AKIDAUDIT'" in endpoint_lines[0]
