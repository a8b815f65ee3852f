"""Random AWS requests without a valid signature never reach an actor, but for the SubscribeURL and
UnsubscribeURL visits AWS leaves unsigned, and those only as the operation their token allows.

The gateway runs against a broker whose sessions only record what they are given (a spy), with a
key configured. Requests: Query (GET and POST) and JSON; one to three Action parameters (or
X-Amz-Target headers) drawn from every SQS and SNS action, the two unsigned ones weighted up, and
nonsense; parameters drawn from those the actions take, duplicates included; and an Authorization
header that is absent, garbage, well-formed with a made-up signature, or a real signature of
another request."""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, urlencode, urlsplit

import trio
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import event, given, settings, strategies as st

from dovecote.actors.errors import BrokerError
from dovecote.actors.ops import ConfirmSubscription, Failure, UnsubscribeByUrl
from dovecote.actors.principals import ANYONE, Keyring
from dovecote.net import sns_api, sqs_api
from dovecote.net.audit import Audit
from dovecote.net.aws_gateway import AwsGateway
from dovecote.net.aws_request import BY_URL
from dovecote.net.http_server import HttpRequest, HttpResponse, text_response
from dovecote.net.sigv4 import SigV4Verifier

KEY, SECRET = "AKIDGOOD", "s3cret"
TOPIC_ARN = "arn:aws:sns:eu-west-1:000000000000:news"
SUBSCRIPTION_ARN = f"{TOPIC_ARN}:0b9e8c1a-3f4d-4c8e-9a7b-2d1e6f5a4b3c"
FORM = ("Content-Type", "application/x-www-form-urlencoded")


class SpyBroker:
    """Sessions that record each operation they are handed, and answer it with a failure."""

    def __init__(self) -> None:
        self.received: list[tuple[object, object, str | None]] = []

    def session(self, region=None, principal=ANYONE):
        received = self.received

        acting_in = region or "us-east-1"

        class Spy:
            region = acting_in  # a Session's: the region it acts in

            def submit(self, op, reply, trace_header="") -> None:
                received.append((op, principal, region))
                reply(Failure("InvalidParameter", "the spy answers every operation so"))

        return Spy()


async def not_aws(request: HttpRequest) -> HttpResponse:
    return text_response(404, "not found\n")


def gateway(broker: SpyBroker) -> AwsGateway:
    verifier = SigV4Verifier(Keyring({KEY: SECRET}))
    return AwsGateway(broker, "000000000000", None, not_aws, verifier, Audit())


def signed_headers_of_another_request() -> list[tuple[str, str]]:
    """A valid signature, of a request other than any this test sends."""
    request = AWSRequest(method="POST", url="http://localhost:7481/", data=b"Action=ListQueues&Version=2012-11-05", headers=dict([FORM]))
    SigV4Auth(Credentials(KEY, SECRET), "sqs", "us-east-1").add_auth(request)
    return [(name, value) for name, value in request.headers.items() if name.lower() in ("authorization", "x-amz-date")]


ANOTHER_SIGNATURE = signed_headers_of_another_request()
ACTIONS = sorted(sqs_api._REQUESTS) + sorted(sns_api._REQUESTS)
action_names = st.sampled_from(["ConfirmSubscription", "Unsubscribe"]) | st.sampled_from(ACTIONS) | st.text(max_size=12)
parameter_names = st.sampled_from(
    ["TopicArn", "Token", "SubscriptionArn", "Version", "AuthenticateOnUnsubscribe", "QueueUrl", "QueueName", "Name",
     "Message", "MessageBody", "Protocol", "Endpoint", "Attributes.entry.1.key", "Attributes.entry.1.value",
     "Attribute.1.Name", "Attribute.1.Value", "ReceiptHandle", "NextToken", "AWSAccessKeyId", "Signature"]
) | st.text(max_size=10)
parameter_values = st.sampled_from(
    [TOPIC_ARN, SUBSCRIPTION_ARN, "arn:aws:sqs:us-east-1:000000000000:q", "http://127.0.0.1:9/hook", "f00d" * 16, "http",
     "sqs", "true", "2010-03-31", "q", ""]
) | st.text(max_size=20)
authorizations = st.one_of(
    st.just([]),  # none, three times as often as each other kind
    st.just([]),
    st.just([]),
    st.just(ANOTHER_SIGNATURE),
    st.text(max_size=60).map(lambda text: [("Authorization", text)]),
    st.tuples(st.sampled_from([KEY, "AKIDOTHER", ""]), st.sampled_from(["sqs", "sns", "s3"]), st.text("0123456789abcdef", max_size=64)).map(
        lambda parts: [
            ("Authorization", f"AWS4-HMAC-SHA256 Credential={parts[0]}/20250101/us-east-1/{parts[1]}/aws4_request, "
                              f"SignedHeaders=host;x-amz-date, Signature={parts[2]}"),
            ("X-Amz-Date", "20250101T000000Z"),
        ]
    ),
)


VISITS = [
    [("Action", "ConfirmSubscription"), ("TopicArn", TOPIC_ARN), ("Token", "f00d" * 16)],
    [("Action", "ConfirmSubscription"), ("TopicArn", TOPIC_ARN), ("Token", "f00d"), ("Version", "2010-03-31")],
    [("Action", "Unsubscribe"), ("SubscriptionArn", SUBSCRIPTION_ARN)],
    [("Action", "Unsubscribe"), ("SubscriptionArn", SUBSCRIPTION_ARN), ("Version", "2010-03-31")],
]


@st.composite
def visits_and_near_misses(draw) -> list[tuple[str, str]]:
    """A SubscribeURL's or UnsubscribeURL's parameters, as the broker sends them or with a change or
    two: a second action, another or a repeated parameter, one left out."""
    pairs = list(draw(st.sampled_from(VISITS)))
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
        change = draw(st.sampled_from(["action", "parameter", "repeat", "drop"]))
        if change == "action":
            pairs.append(("Action", draw(action_names)))
        elif change == "parameter":
            pairs.append((draw(parameter_names), draw(parameter_values)))
        elif change == "repeat":
            pairs.append(draw(st.sampled_from(pairs)))
        elif len(pairs) > 1:
            pairs.pop(draw(st.integers(1, len(pairs) - 1)))
    return pairs


@st.composite
def random_parameters(draw) -> list[tuple[str, str]]:
    actions = draw(st.lists(action_names, min_size=1, max_size=3))
    return [("Action", action) for action in actions] + draw(st.lists(st.tuples(parameter_names, parameter_values), max_size=5))


@st.composite
def unsigned_requests(draw) -> HttpRequest:
    pairs = draw(st.permutations(draw(st.one_of(visits_and_near_misses(), visits_and_near_misses(), random_parameters()))))
    actions = [value for key, value in pairs if key == "Action"] or [""]
    headers = [("Host", "localhost:7481"), *draw(authorizations)]
    form = urlencode(pairs)
    match draw(st.sampled_from(["query GET", "query GET", "query POST", "query POST", "JSON"])):
        case "query GET":
            return HttpRequest("GET", "/?" + form, headers, b"")
        case "query POST":
            return HttpRequest("POST", draw(st.sampled_from(["/", "/000000000000/q"])), [*headers, FORM], form.encode())
        case _:
            targets = [("X-Amz-Target", f"AmazonSQS.{action}") for action in actions]
            body = draw(st.sampled_from([b"{}", b'{"QueueName": "q"}', b'{"QueueUrl": "http://localhost/000000000000/q"}', b"[", b"\xff"]))
            return HttpRequest("POST", "/", [*headers, *targets, ("Content-Type", "application/x-amz-json-1.0")], body)


def by_url_operation(request: HttpRequest):
    """The one operation a request may reach an actor with, unsigned: None for all but a visit of a
    SubscribeURL or UnsubscribeURL exactly as the broker sends them."""
    if request.method == "GET":
        pairs = parse_qsl(urlsplit(request.target).query, keep_blank_values=True)
    elif dict(request.headers).get("Content-Type") == FORM[1]:
        pairs = parse_qsl(request.body.decode(), keep_blank_values=True)
    else:
        return None
    if any(name.lower() == "authorization" for name, _ in request.headers):
        return None
    actions = [value for key, value in pairs if key == "Action"]
    names = [key for key, _ in pairs if key != "Action"]
    if len(actions) != 1 or actions[0] not in BY_URL or len(names) != len(set(names)):
        return None
    required, optional = BY_URL[actions[0]]
    if not required <= set(names) <= required | optional:
        return None
    params = dict(pairs)
    try:
        if actions[0] == "ConfirmSubscription":
            return ConfirmSubscription(sns_api.topic_of(params["TopicArn"]), params["Token"])
        return UnsubscribeByUrl(sns_api.topic_of(params["SubscriptionArn"]), params["SubscriptionArn"])
    except BrokerError:
        return None  # not an ARN: refused before any actor


@settings(max_examples=int(os.environ.get("DOVECOTE_FUZZ_EXAMPLES", "600")), deadline=None)
@given(unsigned_requests())
def test_requests_without_a_valid_signature_reach_no_actor_but_as_a_visit_by_url(request):
    broker = SpyBroker()
    response = trio.run(gateway(broker).handle, request)
    assert 400 <= response.status < 500, response
    expected = by_url_operation(request)
    event("a visit by URL" if expected is not None else "refused before any actor")
    if expected is None:
        assert broker.received == []
    else:
        assert [(op, principal) for op, principal, _ in broker.received] == [(expected, ANYONE)]
        arn = dict(parse_qsl(urlsplit(request.target).query or request.body.decode()))
        assert (broker.received[0][2] or "") == sns_api.region_of(arn.get("TopicArn") or arn["SubscriptionArn"])  # the ARN's region


def test_the_spy_sees_what_reaches_an_actor():
    """Not vacuous: a signed request, and a SubscribeURL visit, do reach the spy."""
    broker = SpyBroker()
    request = AWSRequest(method="POST", url="http://localhost:7481/", data=b"Action=ListQueues&Version=2012-11-05", headers=dict([FORM]))
    SigV4Auth(Credentials(KEY, SECRET), "sqs", "us-east-1").add_auth(request)
    signed = HttpRequest("POST", "/", [("Host", "localhost:7481"), *request.headers.items()], request.body)
    trio.run(gateway(broker).handle, signed)
    visit = HttpRequest("GET", "/?" + urlencode({"Action": "ConfirmSubscription", "TopicArn": TOPIC_ARN, "Token": "f00d"}), [], b"")
    trio.run(gateway(broker).handle, visit)
    assert [type(op).__name__ for op, _, _ in broker.received] == ["ListQueues", "ConfirmSubscription"]
    assert broker.received[0][1] == Keyring({KEY: SECRET}).principal(KEY)
