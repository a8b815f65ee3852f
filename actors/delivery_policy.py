"""SNS delivery policies for HTTP/S subscriptions: validated as AWS validates them, merged into the
effective policy (subscription over topic over defaults), and turned into the delays between
retries. Pure.

A policy's retries run in four phases: immediate retries (no delay), pre-backoff retries (the
minimum delay apart), backoff retries (from the minimum delay to the maximum, growing by the backoff
function), and post-backoff retries (the maximum delay apart). AWS names the backoff functions but not
their formulas; here backoff retry i of n (x = i / n) waits: linear min + (max - min) * x;
arithmetic min + (max - min) * x² (gaps that grow by equal steps); geometric min * (max / min) ** x
(each delay a constant factor longer); exponential min + (max - min) * (2 ** 10x - 1) / (2 ** 10 - 1)
(flat, then steep). Each reaches max at the last backoff retry.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import msgspec

from .errors import BrokerError
from .limits import SNS_MAX_RETRIES, SNS_MAX_RETRY_DELAY_S, SNS_MAX_TOTAL_RETRY_S

BACKOFF_FUNCTIONS = ("linear", "arithmetic", "geometric", "exponential")


class RetryPolicy(msgspec.Struct, frozen=True):
    min_delay_s: int = 20
    max_delay_s: int = 20
    retries: int = 3
    no_delay_retries: int = 0
    min_delay_retries: int = 0
    max_delay_retries: int = 0
    backoff: str = "linear"


# AWS's fixed policy for its "customer managed endpoints" (SMTP, SMS, mobile push): 2 retries 10 s
# apart, 10 backing off exponentially to 600 s, then 38 at 600 s, 50 over more than 6 hours
# (https://docs.aws.amazon.com/sns/latest/dg/sns-message-delivery-retries.html).
CUSTOMER_MANAGED_RETRY = RetryPolicy(
    min_delay_s=10, max_delay_s=600, retries=50, min_delay_retries=2, max_delay_retries=38, backoff="exponential"
)


# AWS's fixed policy for its "AWS managed endpoints" (Lambda, as SQS): 3 retries at once, 2 a second
# apart, 10 backing off exponentially to 20 s, then 100,000 at 20 s: 23 days (same page).
AWS_MANAGED_RETRY = RetryPolicy(
    min_delay_s=1, max_delay_s=20, retries=100_015, no_delay_retries=3, min_delay_retries=2, max_delay_retries=100_000,
    backoff="exponential",
)


class EffectivePolicy(msgspec.Struct, frozen=True):
    retry: RetryPolicy = RetryPolicy()
    max_receives_per_second: int | None = None  # None: no throttle
    content_type: str = "text/plain; charset=UTF-8"


def _refuse(reason: str) -> BrokerError:
    return BrokerError("InvalidParameter", f"Invalid parameter: DeliveryPolicy: {reason}")


def _whole(document: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = document.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _refuse(f"{name} must be a whole number from {low} to {high}")
    return value


def retry_policy(document: Any) -> RetryPolicy:
    """A healthyRetryPolicy object, checked."""
    if not isinstance(document, dict):
        raise _refuse("a retry policy must be an object")
    unknown = set(document) - {
        "minDelayTarget", "maxDelayTarget", "numRetries", "numNoDelayRetries",
        "numMinDelayRetries", "numMaxDelayRetries", "backoffFunction",
    }
    if unknown:
        raise _refuse(f"unknown retry policy fields {sorted(unknown)}")
    maximum = _whole(document, "maxDelayTarget", 20, 1, SNS_MAX_RETRY_DELAY_S)
    minimum = _whole(document, "minDelayTarget", min(20, maximum), 1, maximum)
    retries = _whole(document, "numRetries", 3, 0, SNS_MAX_RETRIES)
    phases = [_whole(document, name, 0, 0, SNS_MAX_RETRIES) for name in ("numNoDelayRetries", "numMinDelayRetries", "numMaxDelayRetries")]
    if sum(phases) > retries:
        raise _refuse("numNoDelayRetries + numMinDelayRetries + numMaxDelayRetries must not exceed numRetries")
    backoff = document.get("backoffFunction", "linear")
    if backoff not in BACKOFF_FUNCTIONS:
        raise _refuse(f"backoffFunction must be one of {', '.join(BACKOFF_FUNCTIONS)}")
    policy = RetryPolicy(minimum, maximum, retries, *phases, backoff)
    if sum(retry_delays(policy)) > SNS_MAX_TOTAL_RETRY_S:
        raise _refuse(f"the total retry time must not exceed {SNS_MAX_TOTAL_RETRY_S} seconds")
    return policy


def _throttle(document: Any) -> int:
    if not isinstance(document, dict):
        raise _refuse("a throttle policy must be an object")
    return _whole(document, "maxReceivesPerSecond", 1, 1, 1_000_000)


def _content_type(document: Any) -> str:
    if not isinstance(document, dict) or not isinstance(document.get("headerContentType", ""), str):
        raise _refuse("a request policy must be an object with a headerContentType string")
    return document.get("headerContentType") or EffectivePolicy().content_type


def _object(text: str) -> dict:
    try:
        document = json.loads(text)
    except ValueError:
        raise _refuse("not valid JSON") from None
    if not isinstance(document, dict):
        raise _refuse("must be a JSON object")
    return document


def validate_topic_policy(text: str) -> None:
    """A topic's DeliveryPolicy: {"http": {"defaultHealthyRetryPolicy": ..., ...}}."""
    _topic_http(_object(text))


def validate_subscription_policy(text: str) -> None:
    """A subscription's DeliveryPolicy: {"healthyRetryPolicy": ..., "throttlePolicy": ..., ...}."""
    _subscription_parts(_object(text))


def _topic_http(document: dict) -> dict:
    http = document.get("http", {})
    if set(document) - {"http", "https", "email", "email-json", "sqs", "lambda", "application", "sms", "firehose"}:
        raise _refuse("a topic's policy is keyed by protocol, as {\"http\": {...}}")
    if not isinstance(http, dict):
        raise _refuse("\"http\" must be an object")
    _check_parts(http, "defaultHealthyRetryPolicy", "defaultThrottlePolicy", "defaultRequestPolicy")
    if not isinstance(http.get("disableSubscriptionOverrides", False), bool):
        raise _refuse("disableSubscriptionOverrides must be true or false")
    return http


def _subscription_parts(document: dict) -> dict:
    if set(document) - {"healthyRetryPolicy", "throttlePolicy", "requestPolicy"}:
        raise _refuse("a subscription's policy has healthyRetryPolicy, throttlePolicy and requestPolicy")
    _check_parts(document, "healthyRetryPolicy", "throttlePolicy", "requestPolicy")
    return document


def _check_parts(document: dict, retry: str, throttle: str, request: str) -> None:
    """The retry, throttle and request parts of a policy (named one way for topics, another for
    subscriptions)."""
    if retry in document:
        retry_policy(document[retry])
    if throttle in document:
        _throttle(document[throttle])
    if request in document:
        _content_type(document[request])


def effective(
    topic_policy: str | None, subscription_policy: str | None, default_retry: RetryPolicy = RetryPolicy()
) -> EffectivePolicy:
    """The policy a subscription's deliveries follow: its own, over its topic's, over AWS's
    defaults (default_retry: HTTP/S's unless given); the topic's alone when it disables
    subscription overrides."""
    http = _topic_http(_object(topic_policy)) if topic_policy else {}
    own = _subscription_parts(_object(subscription_policy)) if subscription_policy else {}
    if http.get("disableSubscriptionOverrides"):
        own = {}
    retry = own.get("healthyRetryPolicy", http.get("defaultHealthyRetryPolicy"))
    throttle = own.get("throttlePolicy", http.get("defaultThrottlePolicy"))
    request = own.get("requestPolicy", http.get("defaultRequestPolicy"))
    return EffectivePolicy(
        retry_policy(retry) if retry is not None else default_retry,
        _throttle(throttle) if throttle is not None else None,
        _content_type(request) if request is not None else EffectivePolicy().content_type,
    )


def effective_json(policy: EffectivePolicy) -> str:
    """EffectiveDeliveryPolicy, as GetSubscriptionAttributes shows it."""
    retry = policy.retry
    http: dict[str, Any] = {
        "defaultHealthyRetryPolicy": {
            "minDelayTarget": retry.min_delay_s,
            "maxDelayTarget": retry.max_delay_s,
            "numRetries": retry.retries,
            "numMaxDelayRetries": retry.max_delay_retries,
            "numNoDelayRetries": retry.no_delay_retries,
            "numMinDelayRetries": retry.min_delay_retries,
            "backoffFunction": retry.backoff,
        },
        "disableSubscriptionOverrides": False,
        "defaultRequestPolicy": {"headerContentType": policy.content_type},
    }
    if policy.max_receives_per_second is not None:
        http["defaultThrottlePolicy"] = {"maxReceivesPerSecond": policy.max_receives_per_second}
    return json.dumps({"http": http}, separators=(",", ":"))


def retry_delays(policy: RetryPolicy) -> list[float]:
    """The delay before each retry, in seconds, in order: the four phases."""
    backoff_retries = policy.retries - policy.no_delay_retries - policy.min_delay_retries - policy.max_delay_retries
    low, high = policy.min_delay_s, policy.max_delay_s
    delays = [0.0] * policy.no_delay_retries + [float(low)] * policy.min_delay_retries
    for i in range(1, backoff_retries + 1):
        x = i / backoff_retries
        match policy.backoff:
            case "linear":
                delay = low + (high - low) * x
            case "arithmetic":
                delay = low + (high - low) * x * x
            case "geometric":
                delay = low * (high / low) ** x
            case _:  # exponential
                delay = low + (high - low) * (2 ** (10 * x) - 1) / (2**10 - 1)
        delays.append(min(float(high), delay))  # floating point may overshoot max by a hair
    return delays + [float(high)] * policy.max_delay_retries
