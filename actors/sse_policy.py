"""Which queues and topics encrypt their messages at rest, under which key alias, and how long one
data key serves them. Pure: the store's sealer (storage/sse.py) is given `key_policy` by the wiring
and applies it to the configuration records it commits.

As AWS has it: a queue encrypts with `KmsMasterKeyId` set (SSE-KMS; the alias, ARN or key id names
the family of data keys, here all wrapped by the broker's one master key) or with
`SqsManagedSseEnabled=true` (SSE-SQS, the data keys of alias SSE-SQS); a KmsMasterKeyId wins when
both are set. A topic encrypts with `KmsMasterKeyId`. A data key serves for the queue's
`KmsDataKeyReusePeriodSeconds` (60 s to 24 h, 300 s when not set; 300 s for topics).
"""

from __future__ import annotations

from collections.abc import Mapping

from .limits import SQS_DEFAULT_DATA_KEY_REUSE_S, SQS_MAX_DATA_KEY_REUSE_S, SQS_MIN_DATA_KEY_REUSE_S

SSE_SQS_ALIAS = "SSE-SQS"  # the data keys of queues with SqsManagedSseEnabled=true


def key_policy(attributes: Mapping[str, str], topic: bool) -> tuple[str, int] | None:
    """(key alias, data key reuse period in seconds) of a queue or topic that encrypts; None for
    one that stores in clear."""
    alias = attributes.get("KmsMasterKeyId", "")
    if not alias:
        if topic or attributes.get("SqsManagedSseEnabled", "").lower() != "true":
            return None
        alias = SSE_SQS_ALIAS
    return alias, SQS_DEFAULT_DATA_KEY_REUSE_S if topic else reuse_period_s(attributes)


def reuse_period_s(attributes: Mapping[str, str]) -> int:
    """A queue's KmsDataKeyReusePeriodSeconds; the default when unset, or unreadable (format 1 kept
    it as given), clamped to AWS's range."""
    try:
        period = int(attributes.get("KmsDataKeyReusePeriodSeconds") or SQS_DEFAULT_DATA_KEY_REUSE_S)
    except ValueError:
        period = SQS_DEFAULT_DATA_KEY_REUSE_S
    return min(max(period, SQS_MIN_DATA_KEY_REUSE_S), SQS_MAX_DATA_KEY_REUSE_S)
