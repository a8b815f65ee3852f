"""The one error table every gateway renders from.

Each row: AWS error code (the JSON protocol's `__type`), the code the Query protocol uses (and that
SQS's JSON protocol repeats in `x-amzn-query-error`), HTTP status, whether the sender is at fault,
and whether a retry can succeed. A request that fails as a whole is answered with a `Failure`,
made only by `failure()` from a BrokerError, whose code the table must know; the situations met in
more than one place have a constructor here, so each has one code and one wording.
"""

from __future__ import annotations

from typing import NamedTuple

from dovecote.storage.store import StorageFull

from .ops import Failure


class ErrorKind(NamedTuple):
    code: str
    query_code: str
    http_status: int
    sender_fault: bool
    retryable: bool
    json_type: str  # SQS's JSON `__type`, after its namespace (_JSON_TYPES)


_ROWS = [
    # code,                          query code,                                           status, sender, retryable
    ("InvalidParameterValue", "InvalidParameterValue", 400, True, False),
    ("MissingParameter", "MissingParameter", 400, True, False),
    ("InvalidAttributeName", "InvalidAttributeName", 400, True, False),
    ("InvalidAttributeValue", "InvalidAttributeValue", 400, True, False),
    ("InvalidMessageContents", "InvalidMessageContents", 400, True, False),
    ("InvalidAddress", "InvalidAddress", 404, True, False),
    ("QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue", 400, True, False),
    ("QueueNameExists", "QueueAlreadyExists", 400, True, False),
    ("QueueDeletedRecently", "AWS.SimpleQueueService.QueueDeletedRecently", 400, True, True),
    ("ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid", 400, True, False),
    ("InvalidIdFormat", "InvalidIdFormat", 400, True, False),
    ("MessageNotInflight", "AWS.SimpleQueueService.MessageNotInflight", 400, True, False),
    ("EmptyBatchRequest", "AWS.SimpleQueueService.EmptyBatchRequest", 400, True, False),
    ("TooManyEntriesInBatchRequest", "AWS.SimpleQueueService.TooManyEntriesInBatchRequest", 400, True, False),
    ("BatchEntryIdsNotDistinct", "AWS.SimpleQueueService.BatchEntryIdsNotDistinct", 400, True, False),
    ("BatchRequestTooLong", "AWS.SimpleQueueService.BatchRequestTooLong", 400, True, False),
    ("InvalidBatchEntryId", "AWS.SimpleQueueService.InvalidBatchEntryId", 400, True, False),
    ("PurgeQueueInProgress", "AWS.SimpleQueueService.PurgeQueueInProgress", 403, True, True),
    ("OverLimit", "OverLimit", 403, True, True),
    ("UnsupportedOperation", "AWS.SimpleQueueService.UnsupportedOperation", 400, True, False),
    ("InvalidAction", "InvalidAction", 400, True, False),
    ("InvalidQueryParameter", "InvalidQueryParameter", 400, True, False),
    ("MalformedQueryString", "MalformedQueryString", 400, True, False),  # a Query parameter's name, both services
    ("RequestEntityTooLarge", "RequestEntityTooLarge", 413, True, False),  # an HTTP body past the listener's limit
    ("ResourceNotFoundException", "ResourceNotFoundException", 400, True, False),
    # A refusal by authorisation: SQS's JSON protocol names it AccessDeniedException, its Query
    # protocol (and x-amzn-query-error, which the SDKs read) AccessDenied; SNS's is AuthorizationError.
    ("AccessDeniedException", "AccessDenied", 403, True, False),
    # SNS
    ("InvalidParameter", "InvalidParameter", 400, True, False),
    ("ParameterValueInvalid", "ParameterValueInvalid", 400, True, False),  # botocore's InvalidParameterValueException
    ("NotFound", "NotFound", 404, True, False),
    ("EndpointDisabled", "EndpointDisabled", 400, True, False),
    ("AuthorizationError", "AuthorizationError", 403, True, False),
    ("TopicLimitExceeded", "TopicLimitExceeded", 403, True, False),
    ("SubscriptionLimitExceeded", "SubscriptionLimitExceeded", 403, True, False),
    ("BatchEntryIdsNotDistinctException", "BatchEntryIdsNotDistinct", 400, True, False),
    ("TooManyEntriesInBatchRequestException", "TooManyEntriesInBatchRequest", 400, True, False),
    ("EmptyBatchRequestException", "EmptyBatchRequest", 400, True, False),
    ("InvalidBatchEntryIdException", "InvalidBatchEntryId", 400, True, False),
    ("BatchRequestTooLongException", "BatchRequestTooLong", 400, True, False),
    ("RequestThrottled", "RequestThrottled", 400, True, True),
    # Lambda (its x-amzn-ErrorType is the code; ResourceNotFoundException is 404 there: _LAMBDA_STATUS)
    ("InvalidParameterValueException", "InvalidParameterValueException", 400, True, False),
    ("InvalidRequestContentException", "InvalidRequestContentException", 400, True, False),
    ("ResourceConflictException", "ResourceConflictException", 409, True, False),
    ("PreconditionFailedException", "PreconditionFailedException", 412, True, False),
    ("RequestTooLargeException", "RequestTooLargeException", 413, True, False),
    ("TooManyRequestsException", "TooManyRequestsException", 429, True, True),
    ("ServiceException", "ServiceException", 500, False, True),
    ("MissingAuthenticationToken", "MissingAuthenticationToken", 403, True, False),
    ("IncompleteSignature", "IncompleteSignature", 400, True, False),
    ("InvalidClientTokenId", "InvalidClientTokenId", 403, True, False),
    ("SignatureDoesNotMatch", "SignatureDoesNotMatch", 403, True, False),
    ("RequestExpired", "RequestExpired", 400, True, True),
    ("ServiceUnavailable", "ServiceUnavailable", 503, False, True),
    ("InternalError", "InternalError", 500, False, True),
]

# SQS's JSON protocol sends in `__type` the name of the error's shape in botocore's model, so the
# modelled errors keep their code (QueueDoesNotExist); the errors the model lacks it names so
# (observed: the QueryErrorCode of localstack's AWS recordings, tests/aws/services/sqs/
# test_sqs.snapshot.json), while x-amzn-query-error keeps the Query code.
_JSON_TYPES = {
    "InvalidParameterValue": "InvalidParameterValueException",
    "MissingParameter": "MissingRequiredParameterException",
}
# The Query protocol's own wording where AWS words an error otherwise over JSON (recorded as above).
_QUERY_MESSAGES = {
    "QueueDoesNotExist": "The specified queue does not exist for this wsdl version.",
}

# Lambda's status where it differs from the row's (SQS answers 400 where Lambda answers 404).
_LAMBDA_STATUS = {"ResourceNotFoundException": 404}

KINDS: dict[str, ErrorKind] = {row[0]: ErrorKind(*row, _JSON_TYPES.get(row[0], row[0])) for row in _ROWS}


class BrokerError(Exception):
    """An error with an AWS error code, raised by the actors and rendered by every gateway."""

    def __init__(self, code: str, message: str) -> None:
        if code not in KINDS:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.kind = KINDS[code]
        self.code = code
        self.message = message

    @property
    def retryable(self) -> bool:
        return self.kind.retryable

    @property
    def query_message(self) -> str:
        """The message as the Query protocol words it."""
        return _QUERY_MESSAGES.get(self.code, self.message)

    @property
    def lambda_status(self) -> int:
        """The HTTP status Lambda's REST API answers it with."""
        return _LAMBDA_STATUS.get(self.code, self.kind.http_status)

    def __repr__(self) -> str:
        return f"BrokerError({self.code!r}, {self.message!r})"


def failure(error: BrokerError) -> Failure:
    """The answer a request gets when it fails as a whole: the only way a Failure is made."""
    return Failure(error.code, error.message)


def from_failure(result: Failure) -> BrokerError:
    """A Failure answer back as the error it carries (an unknown code, from a peer of another
    version, as an internal error that names it)."""
    if result.code in KINDS:
        return BrokerError(result.code, result.message)
    return BrokerError("InternalError", f"{result.code}: {result.message}")


# --- the situations more than one place meets, each with one code and one wording ----------------
def invalid(message: str) -> BrokerError:
    return BrokerError("InvalidParameterValue", message)


def invalid_parameter(what: str) -> BrokerError:
    """SNS's word for a bad parameter."""
    return BrokerError("InvalidParameter", f"Invalid parameter: {what}")


def parameter_value_invalid(message: str) -> BrokerError:
    """SNS's refusal of a publish's message attribute values (InvalidParameterValueException)."""
    return BrokerError("ParameterValueInvalid", message)


def no_such_queue() -> BrokerError:
    """AWS names no queue in it (over Query: query_message)."""
    return BrokerError("QueueDoesNotExist", "The specified queue does not exist.")


def missing_parameter(name: str) -> BrokerError:
    return BrokerError("MissingParameter", f"The request must contain the parameter {name}.")


def message_too_long(limit: int) -> BrokerError:
    return invalid(f"One or more parameters are invalid. Reason: Message must be shorter than {limit} bytes.")


def batch_too_long(limit: int, sent: int) -> BrokerError:
    return BrokerError("BatchRequestTooLong", f"Batch requests cannot be longer than {limit} bytes. You have sent {sent} bytes.")


def empty_batch(action: str) -> BrokerError:
    """A batch request without entries, named as the action's entries are (SendMessageBatchRequestEntry)."""
    return BrokerError("EmptyBatchRequest", f"There should be at least one {action}RequestEntry in the request.")


def batch_ids_not_distinct(entry_id: str) -> BrokerError:
    return BrokerError("BatchEntryIdsNotDistinct", f"Id {entry_id} repeated.")


def invalid_character(character: str, where: str) -> BrokerError:
    """A character outside SQS's set in a body or attribute value (`where`: "the message body").
    AWS answers InvalidParameterValue, not the model's InvalidMessageContents, in these words
    (observed in production: a service's record of SQS's answer, quoted in public code)."""
    return invalid(
        f"Invalid binary character '#x{ord(character):X}' was found in {where}, the set of allowed "
        "characters is #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF]."
    )


def no_such_topic() -> BrokerError:
    return BrokerError("NotFound", "Topic does not exist")


def unknown_action(action: str) -> BrokerError:
    """An SQS action this endpoint does not serve (an unknown one, or one of no queue sent to a
    queue's URL)."""
    return BrokerError("InvalidAction", f"The action {action} is not valid for this endpoint.")


def not_an_operation(kind: str, op: object) -> BrokerError:
    return BrokerError("InvalidAction", f"{type(op).__name__} is not a {kind} operation.")


def access_denied(who: str, action: str, resource: str, explicitly: bool) -> BrokerError:
    """A request authorisation refused (authorization.py), in its service's words: SQS's
    AccessDenied, SNS's AuthorizationError; who is the principal's ARN."""
    why = "with an explicit deny" if explicitly else "because no policy allows it"
    message = f"User: {who} is not authorized to perform: {action} on resource: {resource} {why}"
    return BrokerError("AuthorizationError" if action.startswith("sns:") else "AccessDeniedException", message)


def overloaded(what: str) -> BrokerError:
    return BrokerError("RequestThrottled", f"{what} is overloaded; retry the request shortly.")


def shutting_down() -> BrokerError:
    return BrokerError("ServiceUnavailable", "The broker is shutting down.")


def actor_failed(what: str) -> BrokerError:
    """A request cut short by a bug in the actor serving it; the actor is rebuilt from the store."""
    return BrokerError("InternalError", f"{what} failed while handling this request; retry.")


def actor_stopped(what: str, failures: int, deletable: bool = True) -> BrokerError:
    """An actor that failed too often in a row: its supervisor stopped restarting it."""
    return BrokerError(
        "ServiceUnavailable",
        f"{what} failed {failures} times in a row and is stopped; the broker's log says why. "
        + ("It can still be deleted; restarting" if deletable else "Restarting")
        + " the broker tries it again.",
    )


def storage_failed(error: Exception) -> BrokerError:
    """A commit the store refused: a full disk (sends are refused until space returns) or a fault."""
    if isinstance(error, StorageFull):
        return BrokerError("ServiceUnavailable", f"Storage is full; sends are refused until space returns ({error}).")
    return BrokerError("ServiceUnavailable", f"Storage failed: {error}")


def original_not_stored(what: str) -> BrokerError:
    """A FIFO duplicate whose original the store refused: the duplicate must be sent again."""
    return BrokerError("ServiceUnavailable", f"The message this one duplicates was not stored; {what} it again.")
