"""Tags of queues and topics, and the permissions AddPermission writes into their Policy: pure rules
and JSON."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

from .errors import BrokerError, invalid
from .limits import MAX_TAG_KEY_CHARS, MAX_TAG_VALUE_CHARS, MAX_TAGS

_LABEL = re.compile(r"[A-Za-z0-9_-]{1,80}")
_ACCOUNT = re.compile(r"\d{12}")
# The actions an owner can share, per service; for SQS the rest (CreateQueue, SetQueueAttributes,
# ...) are not.
SHAREABLE_ACTIONS = {
    "SQS": frozenset(
        {
            "*",
            "SendMessage",
            "ReceiveMessage",
            "DeleteMessage",
            "ChangeMessageVisibility",
            "GetQueueAttributes",
            "GetQueueUrl",
            "ListDeadLetterSourceQueues",
            "PurgeQueue",
            "ListQueueTags",
        }
    ),
    "SNS": frozenset(
        {
            "*",
            "Publish",
            "Subscribe",
            "Receive",
            "GetTopicAttributes",
            "SetTopicAttributes",
            "AddPermission",
            "RemovePermission",
            "DeleteTopic",
            "ListSubscriptionsByTopic",
        }
    ),
}


def validate_tags(tags: Mapping[str, str]) -> None:
    for key, value in tags.items():
        if not 1 <= len(key) <= MAX_TAG_KEY_CHARS or key.lower().startswith("aws:"):
            raise invalid(f"Tag key '{key[:140]}' is invalid: 1 to {MAX_TAG_KEY_CHARS} characters, not starting with aws:.")
        if len(value) > MAX_TAG_VALUE_CHARS:
            raise invalid(f"The value of tag '{key}' is longer than {MAX_TAG_VALUE_CHARS} characters.")


def tagged(current: Mapping[str, str], added: Mapping[str, str]) -> dict[str, str]:
    validate_tags(added)
    merged = {**current, **added}
    if len(merged) > MAX_TAGS:
        raise invalid(f"A queue or topic can have at most {MAX_TAGS} tags; this would give it {len(merged)}.")
    return merged


def untagged(current: Mapping[str, str], keys: Sequence[str]) -> dict[str, str]:
    if not keys:
        raise BrokerError("MissingParameter", "The request must contain the parameter TagKeys.")
    return {key: value for key, value in current.items() if key not in set(keys)}


def with_permission(
    policy: str | None,
    queue_arn: str,
    label: str,
    account_ids: Sequence[str],
    actions: Sequence[str],
    service: str = "SQS",
) -> str:
    """The Policy after AddPermission: a statement with Sid=label allowing those accounts those
    actions (of `service`, SQS or SNS, on the resource queue_arn names)."""
    if not _LABEL.fullmatch(label):
        raise invalid(f"Value {label[:100]} for parameter Label is invalid. Reason: must be 1 to 80 alphanumeric, - or _.")
    if not account_ids:
        raise BrokerError("MissingParameter", "The request must contain the parameter AWSAccountIds.")
    if not actions:
        raise BrokerError("MissingParameter", "The request must contain the parameter Actions.")
    for account in account_ids:
        if not _ACCOUNT.fullmatch(account):
            raise invalid(f"Value {account[:40]} for parameter AWSAccountIds is invalid. Reason: not an account id.")
    for action in actions:
        if action not in SHAREABLE_ACTIONS[service]:
            raise invalid(f"Value {service}:{action[:60]} for parameter ActionName is invalid. Reason: Only the owner is allowed to invoke this action.")
    document = _document(policy, queue_arn)
    if any(statement.get("Sid") == label for statement in document["Statement"]):
        raise invalid(f"Value {label} for parameter Label is invalid. Reason: Already exists.")
    document["Statement"].append(
        {
            "Sid": label,
            "Effect": "Allow",
            "Principal": {"AWS": _as_written([f"arn:aws:iam::{account}:root" for account in account_ids], service)},
            "Action": _as_written([f"{service}:{action}" for action in actions], service),
            "Resource": queue_arn,
        }
    )
    return json.dumps(document, separators=(",", ":"))


def _as_written(values: list[str], service: str) -> str | list[str]:
    """A statement's value as SQS writes it: one value as a string, more as a list (recorded:
    localstack's test_sqs_permission_lifecycle). SNS's are left as lists, as they were."""
    return values[0] if service == "SQS" and len(values) == 1 else values


def without_permission(attributes: Mapping[str, str], queue_arn: str, label: str) -> dict[str, str]:
    """A queue's or topic's attributes after RemovePermission (no Policy once no statement is left)."""
    kept_attributes = {name: value for name, value in attributes.items() if name != "Policy"}
    document = _without_statement(attributes.get("Policy"), queue_arn, label)
    if document is not None:
        kept_attributes["Policy"] = document
    return kept_attributes


def _without_statement(policy: str | None, queue_arn: str, label: str) -> str | None:
    document = _document(policy, queue_arn)
    kept = [statement for statement in document["Statement"] if statement.get("Sid") != label]
    if len(kept) == len(document["Statement"]):
        raise invalid(f"Value {label[:100]} for parameter Label is invalid. Reason: can't find label on existing policy.")
    if not kept:
        return None
    document["Statement"] = kept
    return json.dumps(document, separators=(",", ":"))


def _document(policy: str | None, queue_arn: str) -> dict:
    if policy:
        try:
            document = json.loads(policy)
        except ValueError:
            document = None
        if isinstance(document, dict) and isinstance(document.get("Statement"), list):
            return document
    # The version AWS writes in the policy AddPermission makes (recorded as above).
    return {"Version": "2008-10-17", "Id": f"{queue_arn}/SQSDefaultPolicy", "Statement": []}
