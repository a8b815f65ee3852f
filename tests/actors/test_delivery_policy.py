"""Delivery policies for HTTP/S subscriptions: AWS's validation rules, the effective policy, and
the delays of the four retry phases."""

import json

import pytest
from hypothesis import given, strategies as st

from dovecote.actors.delivery_policy import (
    BACKOFF_FUNCTIONS,
    RetryPolicy,
    effective,
    effective_json,
    retry_delays,
    validate_subscription_policy,
    validate_topic_policy,
)
from dovecote.actors.errors import BrokerError
from dovecote.actors.limits import SNS_MAX_TOTAL_RETRY_S


def topic_policy(retry=None, **http):
    if retry is not None:
        http["defaultHealthyRetryPolicy"] = retry
    return json.dumps({"http": http})


def test_the_defaults_are_aws_defaults():
    policy = effective(None, None)
    assert policy.retry == RetryPolicy(20, 20, 3, 0, 0, 0, "linear")
    assert policy.max_receives_per_second is None
    assert retry_delays(policy.retry) == [20.0, 20.0, 20.0]
    document = json.loads(effective_json(policy))["http"]
    assert document["defaultHealthyRetryPolicy"]["numRetries"] == 3
    assert document["defaultRequestPolicy"] == {"headerContentType": "text/plain; charset=UTF-8"}


def test_the_four_phases_in_order():
    policy = RetryPolicy(min_delay_s=1, max_delay_s=60, retries=12, no_delay_retries=2, min_delay_retries=3,
                         max_delay_retries=2, backoff="linear")
    delays = retry_delays(policy)
    assert len(delays) == 12
    assert delays[:2] == [0.0, 0.0]  # immediate
    assert delays[2:5] == [1.0, 1.0, 1.0]  # pre-backoff, the minimum apart
    assert delays[5:10] == pytest.approx([12.8, 24.6, 36.4, 48.2, 60.0])  # backoff, linear from min to max
    assert delays[10:] == [60.0, 60.0]  # post-backoff, the maximum apart


@pytest.mark.parametrize("backoff", BACKOFF_FUNCTIONS)
def test_every_backoff_function_grows_from_min_to_max(backoff):
    delays = retry_delays(RetryPolicy(2, 100, 8, backoff=backoff))
    assert delays == sorted(delays) and delays[-1] == pytest.approx(100) and delays[0] > 2


def test_backoff_functions_differ_in_shape():
    middle = {b: retry_delays(RetryPolicy(1, 100, 10, backoff=b))[4] for b in BACKOFF_FUNCTIONS}
    assert middle["exponential"] < middle["geometric"] < middle["arithmetic"] < middle["linear"]


def test_subscription_over_topic_over_defaults_unless_overrides_are_disabled():
    topic = topic_policy({"minDelayTarget": 5, "maxDelayTarget": 50, "numRetries": 4},
                         defaultThrottlePolicy={"maxReceivesPerSecond": 7})
    subscription = json.dumps({"healthyRetryPolicy": {"numRetries": 1}, "requestPolicy": {"headerContentType": "application/json"}})
    merged = effective(topic, subscription)
    assert merged.retry.retries == 1 and merged.max_receives_per_second == 7
    assert merged.content_type == "application/json"
    assert effective(topic, None).retry.retries == 4
    locked = topic_policy({"numRetries": 4}, disableSubscriptionOverrides=True)
    assert effective(locked, subscription).retry.retries == 4


@pytest.mark.parametrize(
    "policy, reason",
    [
        ({"minDelayTarget": 0}, "minDelayTarget"),
        ({"minDelayTarget": 30, "maxDelayTarget": 20}, "minDelayTarget"),
        ({"maxDelayTarget": 3601}, "maxDelayTarget"),
        ({"numRetries": 101}, "numRetries"),
        ({"numRetries": 2, "numNoDelayRetries": 2, "numMinDelayRetries": 1}, "must not exceed numRetries"),
        ({"backoffFunction": "random"}, "backoffFunction"),
        ({"minDelayTarget": 100, "maxDelayTarget": 100, "numRetries": 40}, "total retry time"),
        ({"numRetries": "3"}, "numRetries"),
        ({"colour": 1}, "unknown"),
    ],
)
def test_invalid_retry_policies_are_refused_with_the_reason(policy, reason):
    for validate, text in (
        (validate_topic_policy, topic_policy(policy)),
        (validate_subscription_policy, json.dumps({"healthyRetryPolicy": policy})),
    ):
        with pytest.raises(BrokerError) as error:
            validate(text)
        assert error.value.code == "InvalidParameter" and reason in error.value.message


@pytest.mark.parametrize(
    "text",
    ["not json", "[]", json.dumps({"http": []}), json.dumps({"ftp": {}}),
     json.dumps({"http": {"defaultThrottlePolicy": {"maxReceivesPerSecond": 0}}}),
     json.dumps({"http": {"disableSubscriptionOverrides": "yes"}})],
)
def test_malformed_topic_policies_are_refused(text):
    with pytest.raises(BrokerError):
        validate_topic_policy(text)


@given(
    minimum=st.integers(1, 60),
    extra=st.integers(0, 60),
    phases=st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5), st.integers(0, 10)),
    backoff=st.sampled_from(BACKOFF_FUNCTIONS),
)
def test_delays_stay_within_the_policy(minimum, extra, phases, backoff):
    no_delay, min_delay, max_delay, backoff_count = phases
    policy = RetryPolicy(minimum, minimum + extra, sum(phases), no_delay, min_delay, max_delay, backoff)
    delays = retry_delays(policy)
    assert len(delays) == policy.retries
    assert all(d == 0 for d in delays[:no_delay])
    assert all(minimum - 1e-9 <= d <= minimum + extra + 1e-9 for d in delays[no_delay:])
    assert delays[no_delay:] == sorted(delays[no_delay:])
    if sum(delays) <= SNS_MAX_TOTAL_RETRY_S:
        text = json.dumps({"healthyRetryPolicy": {"minDelayTarget": minimum, "maxDelayTarget": minimum + extra,
                                                   "numRetries": sum(phases), "numNoDelayRetries": no_delay,
                                                   "numMinDelayRetries": min_delay, "numMaxDelayRetries": max_delay,
                                                   "backoffFunction": backoff}})
        validate_subscription_policy(text)
