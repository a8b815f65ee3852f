"""When to attempt the pending pushes of one subscription: each push's retry time under the delivery
policy, the throttle (maxReceivesPerSecond), and the cap on attempts in flight. Pure: times are
passed in, nothing is sent from here.
"""

from __future__ import annotations

import heapq
import math

import msgspec

from .delivery_policy import EffectivePolicy, retry_delays


class PushSchedule:
    def __init__(self, policy: EffectivePolicy, max_in_flight: int, now: float) -> None:
        self.max_in_flight = max_in_flight
        self._attempts: dict[int, int] = {}  # seq -> failed attempts so far, of every pending push
        self._due: list[tuple[float, int]] = []  # (due time, seq) of pending pushes not in flight
        self.in_flight: set[int] = set()
        self._tokens = math.inf  # capped to the burst by set_policy
        self._refilled_at = now
        self.set_policy(policy)

    def set_policy(self, policy: EffectivePolicy) -> None:
        self.policy = policy
        retry = policy.retry
        # The last phase's retries all wait max_delay_s: not listed (AWS's policy for its own
        # endpoints has 100,000 of them).
        self._delays = retry_delays(msgspec.structs.replace(retry, retries=retry.retries - retry.max_delay_retries, max_delay_retries=0))
        rate = policy.max_receives_per_second
        # A tenth of a second's worth of sends may go at once (at least one).
        self._burst = max(1.0, rate / 10) if rate is not None else math.inf
        self._tokens = min(self._tokens, self._burst) if rate is not None else math.inf

    def __len__(self) -> int:
        return len(self._attempts)

    def add(self, seq: int, attempts: int = 0, due: float = -math.inf) -> None:
        if seq in self._attempts:
            return
        self._attempts[seq] = attempts
        heapq.heappush(self._due, (due, seq))

    def take(self, now: float) -> list[int]:
        """The pushes to attempt now (they are in flight until succeeded, failed or dropped)."""
        self._refill(now)
        taken: list[int] = []
        while self._due and self._due[0][0] <= now and len(self.in_flight) < self.max_in_flight and self._tokens >= 1:
            _, seq = heapq.heappop(self._due)
            if seq not in self._attempts:
                continue  # dropped while waiting
            self._tokens -= 1
            self.in_flight.add(seq)
            taken.append(seq)
        return taken

    def wake_at(self, now: float) -> float:
        """When take() may next have something (math.inf: only when an attempt ends)."""
        while self._due and self._due[0][1] not in self._attempts:
            heapq.heappop(self._due)
        if not self._due or len(self.in_flight) >= self.max_in_flight:
            return math.inf
        due = self._due[0][0]
        if self._tokens < 1 and self.policy.max_receives_per_second:
            due = max(due, now + (1 - self._tokens) / self.policy.max_receives_per_second)
        return due

    def succeeded(self, seq: int) -> int:
        """A push was delivered; returns how many attempts it took."""
        self.in_flight.discard(seq)
        return self._attempts.pop(seq, 0) + 1

    def failed(self, seq: int, now: float) -> tuple[int, float | None]:
        """An attempt failed: its number, and when to try again (None: the policy is exhausted;
        the push stays in flight until dropped)."""
        attempt = self._attempts[seq] + 1
        self._attempts[seq] = attempt
        retry = self.policy.retry
        if attempt > retry.retries:
            return attempt, None
        self.in_flight.discard(seq)
        retry_at = now + (self._delays[attempt - 1] if attempt <= len(self._delays) else retry.max_delay_s)
        heapq.heappush(self._due, (retry_at, seq))
        return attempt, retry_at

    def give_up(self, seq: int) -> tuple[int, None]:
        """An attempt failed for good, whatever the policy: its number (the push stays in flight
        until dropped)."""
        attempt = self._attempts[seq] + 1
        self._attempts[seq] = attempt
        return attempt, None

    def drop(self, seq: int) -> None:
        self.in_flight.discard(seq)
        self._attempts.pop(seq, None)

    def _refill(self, now: float) -> None:
        rate = self.policy.max_receives_per_second
        if rate is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._refilled_at) * rate)
        self._refilled_at = now
