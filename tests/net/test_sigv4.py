"""The --access-key mode: AWS Signature Version 4 checked on both AWS protocols, against a real
`dovecote serve`; and, without keys, any signature accepted. The verifier itself is held to AWS's
published test suite (tests/vectors/sigv4_suite.json), to requests botocore signs, and to random
changes of signed requests, which it must refuse."""

import calendar
import hashlib
import json
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

import boto3
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from dovecote.actors.principals import Keyring, Principal
from dovecote.actors.errors import BrokerError
from dovecote.net.credential_scope import parse_authorization
from dovecote.net.http_server import HttpRequest
from dovecote.net.sigv4 import MAX_CLOCK_SKEW_S, SigV4Verifier, authorization_headers, canonical_request, signature, string_to_sign

from ..faults.serve import ServeProcess


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    broker = ServeProcess(tmp_path_factory.mktemp("sigv4") / "data", "--access-key", "AKIDGOOD:s3cret").start()
    yield f"http://127.0.0.1:{broker.http_port}"
    assert broker.terminate() == 0


def sqs(endpoint, key="AKIDGOOD", secret="s3cret"):
    return boto3.client(
        "sqs", endpoint_url=endpoint, region_name="eu-west-1", aws_access_key_id=key,
        aws_secret_access_key=secret, config=Config(retries={"max_attempts": 1}),
    )


def test_a_correctly_signed_client_is_served(endpoint):
    client = sqs(endpoint)
    url = client.create_queue(QueueName="signed")["QueueUrl"]
    client.send_message(QueueUrl=url, MessageBody="signed body ✓")
    assert client.receive_message(QueueUrl=url)["Messages"][0]["Body"] == "signed body ✓"


@pytest.mark.parametrize(
    ("key", "secret", "code"),
    [("AKIDGOOD", "wrong", "SignatureDoesNotMatch"), ("AKIDUNKNOWN", "s3cret", "InvalidClientTokenId")],
)
def test_bad_credentials_are_refused_with_aws_codes(endpoint, key, secret, code):
    with pytest.raises(Exception) as caught:
        sqs(endpoint, key, secret).list_queues()
    assert caught.value.response["Error"]["Code"] == code
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_unsigned_and_tampered_requests_are_refused(endpoint):
    unsigned = httpx.post(endpoint, content=b"{}", headers={"X-Amz-Target": "AmazonSQS.ListQueues"})
    assert unsigned.status_code == 403 and unsigned.json()["__type"].endswith("#MissingAuthenticationToken")
    request = AWSRequest(
        method="POST", url=endpoint + "/", data=b"Action=ListQueues&Version=2012-11-05",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    SigV4Auth(Credentials("AKIDGOOD", "s3cret"), "sqs", "us-east-1").add_auth(request)
    signed = dict(request.headers)
    ok = httpx.post(endpoint, content=request.body, headers=signed)
    assert ok.status_code == 200 and b"ListQueuesResponse" in ok.content
    tampered = httpx.post(endpoint, content=b"Action=ListQueues&Version=2012-11-06", headers=signed)
    assert tampered.status_code == 403 and b"SignatureDoesNotMatch" in tampered.content


def test_the_cli_refuses_a_malformed_key(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "dovecote", "serve", "--data-dir", str(tmp_path), "--access-key", "no-colon"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0 and "ID:SECRET" in result.stderr


def test_a_subscribe_url_is_visited_without_a_signature_but_nothing_else_is(endpoint):
    """The token authenticates ConfirmSubscription, as on AWS: an unsigned GET of a SubscribeURL
    reaches the topic (here, which refuses the unknown token), another unsigned action does not."""
    sns = boto3.client(
        "sns", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="AKIDGOOD",
        aws_secret_access_key="s3cret", config=Config(retries={"max_attempts": 1}),
    )
    topic = sns.create_topic(Name="signed-topic")["TopicArn"]
    confirm = httpx.get(endpoint + "/", params={"Action": "ConfirmSubscription", "TopicArn": topic, "Token": "f00d"})
    assert confirm.status_code == 400 and b"<Code>InvalidParameter</Code>" in confirm.content
    assert b"Invalid parameter: Token" in confirm.content  # the topic answered (as AWS words it): no such token
    listing = httpx.get(endpoint + "/", params={"Action": "ListTopics"})
    assert listing.status_code == 403


def test_boto3_sqs_json_and_sns_query_clients_are_served_end_to_end(endpoint):
    """Every request signed by botocore and checked by the broker: SQS over JSON with text beyond
    ASCII in bodies and attributes, SNS over Query fanning out to the queue (whose policy lets the
    topic send to it: with authentication on, SNS delivers only where a queue's policy allows, as on AWS)."""
    client = sqs(endpoint)
    url = client.create_queue(QueueName="signed-fan-out")["QueueUrl"]
    body = "héllo wörld ✓ 日本語 + & = % / ?"
    client.send_message(
        QueueUrl=url, MessageBody=body, MessageAttributes={"note": {"DataType": "String", "StringValue": "ünïcode ✓"}}
    )
    client.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"batch {i} ✓"} for i in range(3)])
    sns = boto3.client(
        "sns", endpoint_url=endpoint, region_name="eu-west-1", aws_access_key_id="AKIDGOOD",
        aws_secret_access_key="s3cret", config=Config(retries={"max_attempts": 1}),
    )
    topic = sns.create_topic(Name="signed-fan-out")["TopicArn"]
    queue_arn = client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    client.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps({"Statement": [{
        "Effect": "Allow", "Principal": {"Service": "sns.amazonaws.com"}, "Action": "sqs:SendMessage", "Resource": queue_arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": topic}},
    }]})})
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    assert queue_arn in [s["Endpoint"] for s in sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]]
    sns.publish(
        TopicArn=topic, Message="published ✓ a+b=c&d", Subject="signed",
        MessageAttributes={"kind": {"DataType": "String", "StringValue": "é ✓"}},
    )
    received = []
    deadline = time.monotonic() + 20
    while len(received) < 5 and time.monotonic() < deadline:
        reply = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"])
        for message in reply.get("Messages", []):
            received.append(message)
            client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    assert sorted(m["Body"] for m in received) == sorted([body, "batch 0 ✓", "batch 1 ✓", "batch 2 ✓", "published ✓ a+b=c&d"])
    (sent,) = [m for m in received if m["Body"] == body]
    assert sent["MessageAttributes"]["note"]["StringValue"] == "ünïcode ✓"


# AWS's published test suite ------------------------------------------------------------------------

SUITE = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "sigv4_suite.json").read_text(encoding="utf-8"))
SUITE_SIGNED_AT_S = calendar.timegm(time.strptime(SUITE["signed_at"], "%Y%m%dT%H%M%SZ"))
SUITE_VERIFIER = SigV4Verifier(Keyring({SUITE["access_key"]: SUITE["secret_key"]}))


def suite_request(raw: str, *more_headers: tuple[str, str]) -> HttpRequest:
    """A request as the suite writes one: request line, `Name:value` lines, a blank line, the body."""
    head, _, body = raw.partition("\n\n")
    request_line, *header_lines = head.split("\n")
    method, _, rest = request_line.partition(" ")
    target = rest.rpartition(" ")[0]  # get-space's path holds a space
    headers = [(name, value) for name, _, value in (line.partition(":") for line in header_lines)]
    return HttpRequest(method, target, [*headers, *more_headers], body.encode())


def suite_signed(name: str) -> HttpRequest:
    case = SUITE["cases"][name]
    added = [(header, value) for header, value in case.get("headers_added_after_signing", [])]
    return suite_request(case["request"], ("Authorization", case["authorization"]), *added)


def header(request: HttpRequest, name: str) -> str:
    return next(value for key, value in request.headers if key.lower() == name)


def with_header(request: HttpRequest, name: str, value: str | None) -> HttpRequest:
    """`request` with its `name` headers replaced by one holding `value` (removed for None)."""
    kept = [(key, old) for key, old in request.headers if key.lower() != name.lower()]
    return request._replace(headers=kept if value is None else [*kept, (name, value)])


def one_character_changed(text: str) -> str:
    """`text` with its next-to-last character changed (the last of an X-Amz-Date is its "Z")."""
    return text[:-2] + ("1" if text[-2] != "1" else "2") + text[-1]


@pytest.mark.parametrize("name", sorted(SUITE["cases"]))
def test_each_step_of_the_suite_cases(name):
    """Each step is fed the suite's own output of the step before, so a wrong step fails on its own."""
    case = SUITE["cases"][name]
    authorization = parse_authorization(case["authorization"])
    assert canonical_request(suite_request(case["request"]), authorization.signed_headers) == case["canonical_request"]
    text_to_sign = string_to_sign(SUITE["signed_at"], SUITE["region"], SUITE["service"], case["canonical_request"])
    assert text_to_sign == case["string_to_sign"]
    date = SUITE["signed_at"][:8]
    expected = authorization.signature
    assert signature(SUITE["secret_key"], date, SUITE["region"], SUITE["service"], case["string_to_sign"]) == expected


@pytest.mark.parametrize("name", sorted(SUITE["cases"]))
def test_the_verifier_accepts_each_suite_request_and_refuses_it_changed(name):
    signed = suite_signed(name)
    assert SUITE_VERIFIER.verify(signed, now_s=SUITE_SIGNED_AT_S) == Principal(SUITE["access_key"])
    SUITE_VERIFIER.verify(with_header(signed, "X-Not-Signed", "anything"), now_s=SUITE_SIGNED_AT_S)
    tampered = {
        "signature": with_header(signed, "Authorization", one_character_changed(header(signed, "authorization"))),
        "body": signed._replace(body=bytes([signed.body[0] ^ 1]) + signed.body[1:] if signed.body else b"x"),
    }
    for signed_name in parse_authorization(header(signed, "authorization")).signed_headers:
        first = next(i for i, (key, _) in enumerate(signed.headers) if key.lower() == signed_name)
        headers = list(signed.headers)
        headers[first] = (headers[first][0], one_character_changed(headers[first][1]))
        tampered[signed_name] = signed._replace(headers=headers)
    for what, request in tampered.items():
        with pytest.raises(BrokerError) as caught:
            SUITE_VERIFIER.verify(request, now_s=SUITE_SIGNED_AT_S)
        assert caught.value.code == "SignatureDoesNotMatch", what


def _with_authorization(old: str, new: str):
    return lambda request: with_header(request, "Authorization", header(request, "authorization").replace(old, new))


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda request: with_header(request, "Authorization", None), "MissingAuthenticationToken"),
        (_with_authorization("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA1"), "IncompleteSignature"),
        (_with_authorization("SignedHeaders=", "Headers="), "IncompleteSignature"),
        (_with_authorization("/aws4_request", "/aws5_request"), "IncompleteSignature"),
        (_with_authorization("AKIDEXAMPLE", "AKIDOTHER"), "InvalidClientTokenId"),
        (lambda request: with_header(request, "X-Amz-Date", None), "IncompleteSignature"),
        (lambda request: with_header(request, "X-Amz-Date", "2015-08-30T12:36:00Z"), "IncompleteSignature"),
        (_with_authorization("/20150830/", "/20150831/"), "SignatureDoesNotMatch"),
        (lambda request: with_header(request, "X-Amz-Content-SHA256", hashlib.sha256(b"other").hexdigest()), "SignatureDoesNotMatch"),
        # compare_digest refuses text beyond ASCII: a forged signature must still be a refusal.
        (_with_authorization("Signature=5fa0", "Signature=é✓"), "SignatureDoesNotMatch"),
    ],
)
def test_malformed_and_mismatched_requests_get_aws_codes(change, code):
    with pytest.raises(BrokerError) as caught:
        SUITE_VERIFIER.verify(change(suite_signed("get-vanilla")), now_s=SUITE_SIGNED_AT_S)
    assert caught.value.code == code


@pytest.mark.parametrize("offset_s", [-MAX_CLOCK_SKEW_S, 0, MAX_CLOCK_SKEW_S])
def test_a_request_is_accepted_within_the_clock_skew_window(offset_s):
    SUITE_VERIFIER.verify(suite_signed("get-vanilla"), now_s=SUITE_SIGNED_AT_S + offset_s)


@pytest.mark.parametrize("offset_s", [-MAX_CLOCK_SKEW_S - 1, MAX_CLOCK_SKEW_S + 1])
def test_a_request_signed_outside_the_clock_skew_window_has_expired(offset_s):
    with pytest.raises(BrokerError) as caught:
        SUITE_VERIFIER.verify(suite_signed("get-vanilla"), now_s=SUITE_SIGNED_AT_S + offset_s)
    assert caught.value.code == "RequestExpired"


# Requests botocore signs ---------------------------------------------------------------------------

VERIFIER = SigV4Verifier(Keyring({"AKIDGOOD": "s3cret"}))
HOST = "http://localhost:7481"
QUEUE_URL = f"{HOST}/000000000000/orders"
FORM = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
BOTOCORE_REQUESTS = {
    "Query GET": dict(method="GET", url=f"{HOST}/?Action=ListQueues&Version=2012-11-05"),
    "Query GET, parameters botocore encodes (a space as +)": dict(
        method="GET", url=QUEUE_URL,
        params={"Action": "SendMessage", "MessageBody": "héllo wörld ✓ a+b=c&d/e?f % ~", "Version": "2012-11-05"},
    ),
    "Query POST form": dict(
        method="POST", url=f"{HOST}/", headers=FORM,
        body=f"Action=SendMessage&QueueUrl={quote(QUEUE_URL, safe='')}&MessageBody=caf%C3%A9+au+lait+%E2%9C%93".encode(),
    ),
    "SQS JSON": dict(
        method="POST", url=f"{HOST}/",
        headers={"X-Amz-Target": "AmazonSQS.SendMessage", "Content-Type": "application/x-amz-json-1.0"},
        body=json.dumps({"QueueUrl": QUEUE_URL, "MessageBody": "日本語 ✓ \"quoted\""}, ensure_ascii=False).encode(),
    ),
    "SNS Query POST in another region": dict(
        method="POST", url=f"{HOST}/", headers=FORM, service="sns", region="us-east-1",
        body=b"Action=Publish&TopicArn=arn%3Aaws%3Asns%3Aus-east-1%3A000000000000%3Anews&Message=%E1%88%B4",
    ),
    "path beyond ASCII, percent-encoded": dict(method="GET", url=f"{HOST}/000000000000/caf%C3%A9%20cr%C3%A8me?Action=GetQueueUrl"),
    "query beyond ASCII": dict(method="GET", url=f"{HOST}/?Action=ListQueues&QueueNamePrefix=%E1%88%B4%E2%9C%93"),
    "repeated query keys": dict(method="GET", url=f"{HOST}/?Attribute=b&Attribute=a&AttributeName.1=All&Attribute=a"),
    "empty query values": dict(method="GET", url=f"{HOST}/?Action=ListQueues&QueueNamePrefix=&Flag"),
    "dot and empty path segments": dict(method="GET", url=f"{HOST}/a/./b/../c//d/?Action=ListQueues"),
    "untrimmed header value": dict(
        method="POST", url=f"{HOST}/", headers={**FORM, "X-Custom": "  a   b \t c  "}, body=b"Action=ListQueues",
    ),
    "payload hash in X-Amz-Content-SHA256": dict(
        method="POST", url=f"{HOST}/", body=b"Action=ListQueues",
        headers={**FORM, "X-Amz-Content-SHA256": hashlib.sha256(b"Action=ListQueues").hexdigest()},
    ),
    "UNSIGNED-PAYLOAD": dict(
        method="POST", url="https://localhost:7481/", headers=FORM, body=b"Action=ListQueues",
        context={"payload_signing_enabled": False},
    ),
    "session token": dict(method="POST", url=f"{HOST}/", headers=FORM, body=b"Action=ListQueues", token="FQoGZXIvYXdzEXAMPLE//+="),
}


class _RecordingSigner(SigV4Auth):
    """botocore's signer, keeping the canonical request it signed."""

    def canonical_request(self, request):
        self.signed_canonical_request = super().canonical_request(request)
        return self.signed_canonical_request


def botocore_signed(
    method, url, *, body=b"", headers=None, params=None, service="sqs", region="eu-west-1", token=None, context=None,
) -> tuple[HttpRequest, str]:
    """The request the broker receives from a client botocore signs, and the canonical request signed."""
    request = AWSRequest(method=method, url=url, data=body, headers=headers or {}, params=params or {})
    request.context.update(context or {})
    signer = _RecordingSigner(Credentials("AKIDGOOD", "s3cret", token), service, region)
    signer.add_auth(request)
    prepared = request.prepare()
    parts = urlsplit(prepared.url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    # The HTTP client (urllib3) adds Host, the one botocore signs.
    received = HttpRequest(method, target, [("Host", parts.netloc), *prepared.headers.items()], prepared.body or b"")
    return received, signer.signed_canonical_request


@pytest.mark.parametrize("name", sorted(BOTOCORE_REQUESTS))
def test_requests_botocore_signs_are_accepted(name):
    request, botocore_canonical = botocore_signed(**BOTOCORE_REQUESTS[name])
    assert canonical_request(request, parse_authorization(header(request, "authorization")).signed_headers) == botocore_canonical
    VERIFIER.verify(request)


# Random changes ------------------------------------------------------------------------------------

ALPHANUMERIC = st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
LATIN_1 = st.characters(max_codepoint=255, blacklist_categories=("Cc",))  # header values as the server decodes them
MUTATION_BASES = ["Query GET, parameters botocore encodes (a space as +)", "Query POST form", "SQS JSON", "repeated query keys"]


@st.composite
def signed_and_changed(draw) -> tuple[HttpRequest, HttpRequest]:
    """A request botocore signed, and the same with one change to what the signature covers."""
    request, _ = botocore_signed(**BOTOCORE_REQUESTS[draw(st.sampled_from(MUTATION_BASES))])
    return request, draw(with_one_change(request))


@st.composite
def with_one_change(draw, request: HttpRequest) -> HttpRequest:
    """`request` with one change to what its signature covers."""
    change = draw(st.sampled_from(["body", "signed header", "query", "target", "path", "method"]))
    if change == "body":
        body = request.body
        at = draw(st.integers(0, max(len(body) - 1, 0)))
        edit = draw(st.sampled_from(["insert", "replace", "delete"] if body else ["insert"]))
        if edit == "insert":
            return request._replace(body=body[:at] + bytes([draw(st.integers(0, 255))]) + body[at:])
        if edit == "replace":
            byte = draw(st.integers(0, 255).filter(lambda b: b != body[at]))
            return request._replace(body=body[:at] + bytes([byte]) + body[at + 1 :])
        return request._replace(body=body[:at] + body[at + 1 :])
    if change == "signed header":
        name = draw(st.sampled_from(parse_authorization(header(request, "authorization")).signed_headers))
        old = header(request, name)
        at = draw(st.integers(0, len(old)))
        new = old[:at] + draw(st.text(LATIN_1, min_size=1, max_size=3)) + old[at + draw(st.integers(0, 2)) :]
        if " ".join(new.split()) == " ".join(old.split()):
            new += "x"
        return with_header(request, name, new)
    path, _, query = request.target.partition("?")
    if change == "query":
        parameter = quote(draw(st.text(min_size=1)), safe="") + "=" + quote(draw(st.text()), safe="")
        return request._replace(target=f"{path}?{query}&{parameter}" if query else f"{path}?{parameter}")
    if change == "target":  # lengthens the last query value, or the path
        return request._replace(target=request.target + draw(ALPHANUMERIC))
    if change == "path":
        segment = "".join(draw(st.lists(ALPHANUMERIC, min_size=1, max_size=5)))
        return request._replace(target=f"/{segment}{request.target}")
    other_method = st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD"]).filter(lambda method: method != request.method)
    return request._replace(method=draw(other_method))


@settings(max_examples=300, deadline=None)
@given(signed_and_changed())
def test_a_signed_request_changed_is_refused(requests):
    signed, changed_request = requests
    VERIFIER.verify(signed)
    with pytest.raises(BrokerError):
        VERIFIER.verify(changed_request)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(MUTATION_BASES),
    st.sampled_from(["Authorization", "X-Amz-Date", "Host", "X-Amz-Content-SHA256", "Content-Type"]),
    st.text(LATIN_1, max_size=300),
)
def test_any_header_value_gets_an_answer_or_a_broker_error_never_a_crash(base, name, value):
    request, _ = botocore_signed(**BOTOCORE_REQUESTS[base])
    try:
        VERIFIER.verify(with_header(request, name, value))
    except BrokerError:
        pass


# Requests the broker signs (net/remote_api.py, the shovels) ------------------------------------------


@pytest.mark.parametrize("service, headers, body", [
    ("sqs", [("Content-Type", "application/x-amz-json-1.0"), ("X-Amz-Target", "AmazonSQS.SendMessageBatch")],
     json.dumps({"QueueUrl": QUEUE_URL, "Entries": [{"Id": "0", "MessageBody": "日本語 ✓"}]}, ensure_ascii=False).encode()),
    ("sns", list(FORM.items()), b"Action=Publish&TopicArn=arn%3Aaws%3Asns%3Aeu-west-1%3A000000000000%3Anews&Message=%E1%88%B4"),
])
def test_requests_the_broker_signs_are_signed_as_botocore_signs_them_and_verify(service, headers, body):
    theirs = AWSRequest(method="POST", url=f"{HOST}/", data=body, headers=dict(headers))
    SigV4Auth(Credentials("AKIDGOOD", "s3cret"), service, "eu-west-1").add_auth(theirs)
    at_s = calendar.timegm(time.strptime(theirs.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ"))  # botocore's moment
    request = HttpRequest("POST", "/", [("Host", "localhost:7481"), *headers], body)
    signed = authorization_headers(request, "AKIDGOOD", "s3cret", "eu-west-1", service, now_s=at_s)
    ours = dict(signed)
    assert ours["Authorization"].rpartition("Signature=")[2] == theirs.headers["Authorization"].rpartition("Signature=")[2]
    VERIFIER.verify(request._replace(headers=signed), now_s=at_s)
    with pytest.raises(BrokerError):  # the body is covered
        VERIFIER.verify(request._replace(headers=signed, body=body + b" "), now_s=at_s)
