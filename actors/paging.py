"""Paging lists, the one way every List* action pages. Pure.

Items are listed in the order of a key (a queue's name, a topic's ARN, a subscription's place); a
NextToken names the last key of the page before, so a page is found by key, not by position, and
queues or topics made or deleted between two calls neither repeat nor skip the others.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import TypeVar

from .errors import BrokerError, invalid, invalid_parameter
from .limits import SNS_PAGE_SIZE, SQS_MAX_LIST_RESULTS
from .ops import QueueNames, SubscriptionInfo, SubscriptionList

T = TypeVar("T")


def page(
    items: Sequence[T], next_token: str | None, size: int, bad_token: BrokerError, key: Callable[[T], str] = str
) -> tuple[list[T], str | None]:
    """The items (in ascending order of `key`, keys distinct) after the one `next_token` names, at
    most `size` of them, and the token of the next page (None: this is the last). Raises
    `bad_token` for a token this function did not make. Items that are strings are their own key."""
    start = _first_after(items, token_key(next_token, bad_token), key) if next_token else 0
    chosen = list(items[start : start + size])
    more = start + size < len(items)
    return chosen, base64.urlsafe_b64encode(key(chosen[-1]).encode()).decode() if more and chosen else None


def token_key(next_token: str, bad_token: BrokerError) -> str:
    """The key a NextToken names (the last of the page before)."""
    try:
        return base64.urlsafe_b64decode(next_token.encode()).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise bad_token from None


def _first_after(items: Sequence[T], after: str, key: Callable[[T], str]) -> int:
    low, high = 0, len(items)
    while low < high:
        middle = (low + high) // 2
        if key(items[middle]) <= after:
            low = middle + 1
        else:
            high = middle
    return low


def queue_names_page(names: Sequence[str], max_results: int | None, next_token: str | None) -> QueueNames:
    """ListQueues and ListDeadLetterSourceQueues: sorted names; a NextToken only when MaxResults
    was given, as SQS answers."""
    if max_results is not None and not 1 <= max_results <= SQS_MAX_LIST_RESULTS:
        raise invalid(f"Value for parameter MaxResults is invalid. Reason: must be between 1 and {SQS_MAX_LIST_RESULTS}.")
    chosen, token = page(names, next_token, max_results or SQS_MAX_LIST_RESULTS, invalid("Invalid NextToken value."))
    return QueueNames(chosen, token if max_results is not None else None)


def sns_page(items: Sequence[T], next_token: str | None, key: Callable[[T], str] = str) -> tuple[list[T], str | None]:
    """SNS's lists: 100 a page."""
    return page(items, next_token, SNS_PAGE_SIZE, bad_sns_token(), key)


def bad_sns_token() -> BrokerError:
    return invalid_parameter("NextToken")


def subscription_page(subscriptions: Sequence[SubscriptionInfo], next_token: str | None) -> SubscriptionList:
    """ListSubscriptionsByTopic: a topic's subscriptions in the order they were made."""
    numbered = list(enumerate(subscriptions))
    chosen, token = sns_page(numbered, next_token, lambda item: f"{item[0]:010d}")
    return SubscriptionList([info for _, info in chosen], token)
