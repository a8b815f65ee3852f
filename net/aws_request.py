"""Which AWS request an HTTP request is: its protocol, service and action, decided once. Pure.

Theory of operation
-------------------
An AWS request names its action in one of two places: the `X-Amz-Target` header (SQS over JSON)
or the `Action` parameter (the Query protocol, SQS and SNS: the query string of a GET, the form
body of a POST). `classify` reads it there, once, and the gateway uses what it found both to decide
whether a signature is needed and to dispatch. A request that names its action twice (two
`Action` parameters, two `X-Amz-Target` headers) is refused whatever the values: with two
readers, one could check one action and the other run another (an unsigned "ConfirmSubscription"
that ran "CreateTopic" was that hole).

A request that proves no key is served only when it is one of the two visits AWS leaves unsigned,
each authenticated by what it carries, and only with exactly their parameters (`Version`
tolerated; `AuthenticateOnUnsubscribe` tolerated and ignored, as AWS ignores it unsigned, and this
broker does not keep it signed either):
- a SubscribeURL: `ConfirmSubscription` with `TopicArn` and `Token` (the topic checks the token);
- an UnsubscribeURL: `Unsubscribe` with `SubscriptionArn` (the ARN's random id is the token; the
  topic refuses it for queue subscriptions, which AWS deletes only on a signed request).
A request that carries an `Authorization` header is never such a visit: its signature is checked
like any other's. Anything else without a valid signature is refused before it reaches an actor.
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import parse_qsl

from dovecote.actors.errors import BrokerError

from .credential_scope import parse_authorization
from .http_server import HttpRequest, split_target
from .sns_api import ACTIONS_ONLY_SNS
from .sqs_query import query_action

SQS_TARGET_PREFIX = "AmazonSQS."
JSON, QUERY = "json", "query"
SQS, SNS = "sqs", "sns"
# action -> (the parameters a visit by URL must carry, those it may carry besides)
BY_URL: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "ConfirmSubscription": (frozenset({"TopicArn", "Token"}), frozenset({"Version", "AuthenticateOnUnsubscribe"})),
    "Unsubscribe": (frozenset({"SubscriptionArn"}), frozenset({"Version"})),
}


# A queue URL's path: /ACCOUNT/QUEUE-NAME
_QUEUE_PATH = re.compile(r"/[0-9]{12}/([A-Za-z0-9_-]{1,80}|[A-Za-z0-9_-]{1,75}\.fifo)/?")


def is_queue_path(target: str) -> bool:
    """Whether a request target is a queue's URL (whatever its query)."""
    return _QUEUE_PATH.fullmatch(split_target(target)[0]) is not None


class AwsRequest(NamedTuple):
    protocol: str  # JSON or QUERY
    service: str  # SQS or SNS: whose shapes the answer takes
    action: str  # "" when refused
    pairs: list[tuple[str, str]]  # the Query parameters, in order ([] for JSON)
    by_url: bool  # an unsigned SubscribeURL or UnsubscribeURL visit: served on its token
    error: BrokerError | None  # why the request is refused as it stands (a repeated action)


def classify(request: HttpRequest) -> AwsRequest | None:
    """What AWS request `request` is, or None if it is none (one of the broker's own endpoints).
    Never raises."""
    targets = [value for name, value in request.headers if name.lower() == "x-amz-target"]
    if request.method == "POST" and any(target.startswith(SQS_TARGET_PREFIX) for target in targets):
        if len(targets) > 1:
            error = BrokerError("InvalidQueryParameter", f"The request gives the X-Amz-Target header {len(targets)} times; give it once.")
            return AwsRequest(JSON, SQS, "", [], False, error)
        return AwsRequest(JSON, SQS, targets[0][len(SQS_TARGET_PREFIX) :], [], False, None)
    pairs = query_pairs(request)
    if pairs is None:
        return None
    signed_for = _signed_for(request)
    try:
        action = query_action(pairs)
    except BrokerError as error:
        actions = {value for key, value in pairs if key == "Action"}
        service = signed_for if signed_for in (SQS, SNS) else SNS if actions & ACTIONS_ONLY_SNS else SQS
        return AwsRequest(QUERY, service, "", pairs, False, error)
    service = SNS if is_sns(action, pairs, signed_for) else SQS
    return AwsRequest(QUERY, service, action, pairs, service == SNS and unsigned_exemption(request, action, pairs), None)


def shape_of_head(request: HttpRequest) -> AwsRequest | None:
    """The protocol and service a request's method and headers show, or None if they show no AWS
    request: to refuse in its shape a request whose body was not read (it was too large) or whose
    handling failed. A Query request is SNS's only if signed for SNS (its action is in the unread
    body: ""); a JSON request's action is its one X-Amz-Target's. Never raises."""
    content_type = next((value for name, value in request.headers if name.lower() == "content-type"), "").lower()
    targets = [value for name, value in request.headers if name.lower() == "x-amz-target"]
    if request.method == "POST" and any(target.startswith(SQS_TARGET_PREFIX) for target in targets):
        action = targets[0][len(SQS_TARGET_PREFIX) :] if len(targets) == 1 else ""
        return AwsRequest(JSON, SQS, action, [], False, None)
    _, query = split_target(request.target)
    if (request.method == "POST" and content_type.startswith("application/x-www-form-urlencoded")) or (
        request.method == "GET" and "Action=" in query
    ):
        return AwsRequest(QUERY, SNS if _signed_for(request) == SNS else SQS, "", [], False, None)
    return None


def is_sns(action: str, pairs: list[tuple[str, str]], signed_for: str | None) -> bool:
    """Whether a Query request is for SNS (the two services share the protocol, and two action
    names): by the service its signature was made for, else by its action and parameters."""
    if signed_for in (SQS, SNS):
        return signed_for == SNS
    return action in ACTIONS_ONLY_SNS or (action in ("AddPermission", "RemovePermission") and any(k == "TopicArn" for k, _ in pairs))


def unsigned_exemption(request: HttpRequest, action: str, pairs: list[tuple[str, str]]) -> bool:
    """Whether the request is a SubscribeURL or UnsubscribeURL visit, to be served without a
    signature: no Authorization header, the action's own parameters each once, nothing else."""
    if action not in BY_URL or any(name.lower() == "authorization" for name, _ in request.headers):
        return False
    required, optional = BY_URL[action]
    names = [key for key, _ in pairs if key != "Action"]
    return len(names) == len(set(names)) and required <= set(names) <= required | optional


def query_pairs(request: HttpRequest) -> list[tuple[str, str]] | None:
    """The parameters of a Query request (form body or query string), or None if it is not one."""
    content_type = next((value for name, value in request.headers if name.lower() == "content-type"), "").lower()
    if request.method == "POST" and content_type.startswith("application/x-www-form-urlencoded"):
        try:
            text = request.body.decode()
        except UnicodeDecodeError:
            return [("Action", "")]
        pairs = parse_qsl(text, keep_blank_values=True)
    elif request.method == "GET":
        pairs = parse_qsl(split_target(request.target)[1], keep_blank_values=True)
    else:
        return None
    return pairs if any(key == "Action" for key, _ in pairs) else None


def _signed_for(request: HttpRequest) -> str | None:
    """The service the request's SigV4 credential scope names, if it carries one (not checked here)."""
    header = next((value for name, value in request.headers if name.lower() == "authorization"), None)
    if header is None:
        return None
    try:
        return parse_authorization(header).service
    except BrokerError:
        return None
