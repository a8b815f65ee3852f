"""The pure schedule of one subscription's pushes: retry times, the cap on attempts in flight and
the throttle, with times passed in."""

import math

import pytest

from dovecote.actors.delivery_policy import AWS_MANAGED_RETRY, EffectivePolicy, RetryPolicy, retry_delays
from dovecote.actors.push_schedule import PushSchedule

POLICY = EffectivePolicy(RetryPolicy(min_delay_s=2, max_delay_s=8, retries=4, no_delay_retries=1, min_delay_retries=1, backoff="linear"))


def test_pushes_are_taken_when_due_and_retried_on_the_policy_delays_until_exhausted():
    schedule = PushSchedule(POLICY, max_in_flight=10, now=0.0)
    schedule.add(1)
    schedule.add(2, due=5.0)
    assert schedule.take(0.0) == [1] and schedule.wake_at(0.0) == 5.0
    now, retry_times = 0.0, []
    for attempt in range(1, 5):
        number, retry_at = schedule.failed(1, now)
        assert number == attempt
        retry_times.append(retry_at - now)
        now = retry_at
        assert schedule.take(now - 0.001) in ([], [2])  # not before its time
        assert 1 in schedule.take(now)
    assert retry_times == retry_delays(POLICY.retry) == [0.0, 2.0, 5.0, 8.0]
    assert schedule.failed(1, now) == (5, None)  # the first attempt and four retries: exhausted
    assert 1 in schedule.in_flight  # until the caller drops it (or hands it to a dead-letter queue)
    schedule.drop(1)
    assert len(schedule) == 1 and schedule.succeeded(2) == 1 and len(schedule) == 0


def test_attempts_in_flight_are_capped_and_a_success_makes_room():
    schedule = PushSchedule(POLICY, max_in_flight=3, now=0.0)
    for seq in range(1, 8):
        schedule.add(seq)
    assert schedule.take(0.0) == [1, 2, 3]
    assert schedule.take(0.0) == [] and schedule.wake_at(0.0) == math.inf  # an outcome wakes it
    assert schedule.succeeded(2) == 1
    assert schedule.take(0.0) == [4]
    schedule.add(4)  # already pending: no second copy
    assert len(schedule) == 6


def test_a_restored_push_keeps_its_attempt_count():
    schedule = PushSchedule(POLICY, max_in_flight=3, now=0.0)
    schedule.add(9, attempts=3, due=1.0)
    assert schedule.take(1.0) == [9]
    assert schedule.failed(9, 1.0) == (4, 1.0 + 8.0)  # its last retry, after the longest delay


def test_the_throttle_spaces_attempts_and_allows_a_tenth_of_a_second_at_once():
    slow = PushSchedule(EffectivePolicy(max_receives_per_second=2), max_in_flight=100, now=0.0)
    for seq in range(10):
        slow.add(seq)
    assert slow.take(0.0) == [0]
    assert slow.wake_at(0.0) == pytest.approx(0.5)
    assert slow.take(0.4) == [] and slow.take(0.5) == [1] and slow.take(1.0) == [2]
    fast = PushSchedule(EffectivePolicy(max_receives_per_second=100), max_in_flight=100, now=0.0)
    for seq in range(50):
        fast.add(seq)
    assert len(fast.take(0.0)) == 10
    assert len(fast.take(0.05)) == 5
    fast.set_policy(EffectivePolicy())  # no throttle
    assert len(fast.take(0.05)) == 35


def test_retries_past_the_listed_delays_wait_the_policys_longest_and_stop_at_its_count():
    """The last phase (max_delay_retries, all at max_delay_s) is not listed, AWS's own policy having
    100,000 of them: the delays are still the policy's, every one, and the count still ends them."""
    policy = RetryPolicy(min_delay_s=1, max_delay_s=4, retries=8, no_delay_retries=1, min_delay_retries=1, max_delay_retries=3, backoff="linear")
    schedule = PushSchedule(EffectivePolicy(policy), max_in_flight=10, now=0.0)
    schedule.add(1)
    delays = []
    for _ in range(policy.retries):
        _, retry_at = schedule.failed(1, 0.0)
        delays.append(retry_at)
        schedule.take(retry_at)
    assert delays == retry_delays(policy)
    assert schedule.failed(1, 0.0) == (9, None)

    managed = PushSchedule(EffectivePolicy(AWS_MANAGED_RETRY), max_in_flight=10, now=0.0)
    managed.add(2, attempts=100_014)
    assert managed.failed(2, 0.0) == (100_015, 20.0)
    managed.take(20.0)
    assert managed.failed(2, 20.0) == (100_016, None)


def test_giving_up_ends_a_push_whatever_its_policy_and_keeps_it_in_flight_until_dropped():
    schedule = PushSchedule(EffectivePolicy(AWS_MANAGED_RETRY), max_in_flight=10, now=0.0)
    schedule.add(1)
    assert schedule.take(0.0) == [1]
    assert schedule.give_up(1) == (1, None)
    assert 1 in schedule.in_flight and schedule.take(1e9) == []
    schedule.drop(1)
    assert len(schedule) == 0
