"""A remote SQS/SNS endpoint, as the shovels speak to it: SQS's JSON 1.0 protocol and SNS's Query
protocol, every request signed with SigV4 (net/sigv4.py, the code that verifies the broker's own
requests). botocore would do the same, but it is tens of megabytes that the device executable would
carry for six calls. HTTP/1.1 is the broker's own client's (http_client.py, one keep-alive
connection a worker), as the pushes': in a profile of a drain through httpx, its client and pool
took more of the broker's time than everything else a forward costs together.

Every failure is a RemoteError: an unreachable or slow remote (status 0), or the remote's refusal
with its code and message as it sent them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from typing import Any, NamedTuple
from urllib.parse import urlencode, urlsplit

import h11
import msgspec
import trio

from dovecote.actors.shovel_core import RemoteConfig, retryable

from .http_client import Answer, HttpConnection, Unreachable, tls_context
from .http_server import HttpRequest
from .sigv4 import authorization_headers

JSON_CONTENT_TYPE = "application/x-amz-json-1.0"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"
UNREACHABLE = "Unreachable"
MAX_ERROR_TEXT = 300
MAX_ANSWER_BYTES = 16 << 20  # ten received messages of 1 MiB and their attributes, with room


class RemoteError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code} ({status}): {message}" if status else f"{code}: {message}")
        self.status = status
        self.code = code

    @property
    def retryable(self) -> bool:
        return self.status == 0 or retryable(self.status, self.code)


class EntryFailure(NamedTuple):
    id: str
    code: str
    message: str
    sender_fault: bool


class BatchOutcome(NamedTuple):
    successful: dict[str, str]  # entry id -> the remote's message id
    failed: list[EntryFailure]


class RemoteApi:
    """A connection to one remote's endpoint (http_client.py), kept alive between requests; one
    request at a time. Owned by the task that opened it (`async with`)."""

    def __init__(self, config: RemoteConfig) -> None:
        self.config = config
        url = urlsplit(config.endpoint_url)
        https = url.scheme == "https"
        self._host = url.netloc
        self._target = (url.path or "/").encode()
        self._http = HttpConnection(url.hostname or "", url.port or (443 if https else 80), tls_context(config.verify) if https else None)

    async def __aenter__(self) -> RemoteApi:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._http.close()

    async def _post(self, service: str, headers: list[tuple[str, str]], body: bytes, extra_s: float) -> Answer:
        config = self.config
        request = HttpRequest("POST", self._target.decode(), [("Host", self._host), *headers], body)
        signed = authorization_headers(request, config.access_key_id, config.secret_access_key, config.region, service)
        encoded = [(name.encode(), value.encode()) for name, value in signed] + [(b"Content-Length", b"%d" % len(body))]
        try:
            with trio.fail_after(config.timeout_s + extra_s):
                return await self._http.exchange(b"POST", self._target, encoded, body, MAX_ANSWER_BYTES)
        except (Unreachable, OSError, trio.BrokenResourceError, trio.TooSlowError, h11.ProtocolError) as error:
            raise RemoteError(0, UNREACHABLE, f"{config.endpoint_url}: {_reason(error)}"[:MAX_ERROR_TEXT]) from None

    async def sqs(self, action: str, params: dict[str, Any], extra_s: float = 0.0) -> dict[str, Any]:
        """An SQS action through the JSON protocol: its answer, or RemoteError."""
        headers = [("Content-Type", JSON_CONTENT_TYPE), ("X-Amz-Target", f"AmazonSQS.{action}")]
        status, response_headers, content, _ = await self._post("sqs", headers, msgspec.json.encode(params), extra_s)
        try:
            answer = msgspec.json.decode(content) if content else {}
        except msgspec.DecodeError:
            answer = None
        if status != 200 or not isinstance(answer, dict):
            code, message = "InvalidResponse", content[:MAX_ERROR_TEXT].decode(errors="replace")
            if isinstance(answer, dict):
                # x-amzn-query-error carries the code the Query protocol would give; __type, AWS's JSON name.
                query_error = response_headers.get("x-amzn-query-error", "").partition(";")[0]
                code = query_error or str(answer.get("__type", code)).rpartition("#")[2]
                message = str(answer.get("message") or answer.get("Message") or "")
            raise RemoteError(status, code, message)
        return answer

    async def sns(self, pairs: Sequence[tuple[str, str]]) -> ElementTree.Element:
        """An SNS action through the Query protocol: its answer's XML, or RemoteError."""
        status, _, content, _ = await self._post("sns", [("Content-Type", FORM_CONTENT_TYPE)], urlencode(pairs).encode(), 0.0)
        try:
            root = ElementTree.fromstring(content)
        except ElementTree.ParseError:
            raise RemoteError(status, "InvalidResponse", content[:MAX_ERROR_TEXT].decode(errors="replace")) from None
        _strip_namespaces(root)
        if status != 200:
            raise RemoteError(status, root.findtext(".//Error/Code") or "InvalidResponse", root.findtext(".//Error/Message") or "")
        return root

    # --- the calls the shovels make ----------------------------------------------------------------

    async def send_batch(self, queue_url: str, entries: list[dict[str, object]]) -> BatchOutcome:
        answer = await self.sqs("SendMessageBatch", {"QueueUrl": queue_url, "Entries": entries})
        successful = {str(entry.get("Id")): str(entry.get("MessageId")) for entry in answer.get("Successful") or ()}
        return BatchOutcome(successful, _json_failures(answer))

    async def receive(self, queue_url: str, max_messages: int, wait_s: int, visibility_s: int) -> list[dict[str, Any]]:
        params = {
            "QueueUrl": queue_url, "MaxNumberOfMessages": max_messages, "WaitTimeSeconds": wait_s,
            "VisibilityTimeout": visibility_s, "MessageAttributeNames": ["All"],
            "MessageSystemAttributeNames": ["All"], "AttributeNames": ["All"],
        }
        answer = await self.sqs("ReceiveMessage", params, extra_s=wait_s)
        messages = answer.get("Messages") or []
        if not isinstance(messages, list):
            raise RemoteError(200, "InvalidResponse", "Messages is not a list")
        return messages

    async def delete_batch(self, queue_url: str, receipt_handles: Sequence[str]) -> list[EntryFailure]:
        entries = [{"Id": str(index), "ReceiptHandle": handle} for index, handle in enumerate(receipt_handles)]
        return _json_failures(await self.sqs("DeleteMessageBatch", {"QueueUrl": queue_url, "Entries": entries}))

    async def release_batch(self, queue_url: str, receipt_handles: Sequence[str]) -> list[EntryFailure]:
        """Visible again at once (ChangeMessageVisibilityBatch to 0)."""
        entries = [{"Id": str(index), "ReceiptHandle": handle, "VisibilityTimeout": 0} for index, handle in enumerate(receipt_handles)]
        return _json_failures(await self.sqs("ChangeMessageVisibilityBatch", {"QueueUrl": queue_url, "Entries": entries}))

    async def publish_batch(self, pairs: Sequence[tuple[str, str]]) -> BatchOutcome:
        root = await self.sns(pairs)
        successful = {
            member.findtext("Id") or "": member.findtext("MessageId") or ""
            for member in root.iterfind(".//Successful/member")
        }
        failed = [
            EntryFailure(member.findtext("Id") or "", member.findtext("Code") or "", member.findtext("Message") or "",
                         (member.findtext("SenderFault") or "").lower() == "true")
            for member in root.iterfind(".//Failed/member")
        ]
        return BatchOutcome(successful, failed)


def _reason(error: BaseException) -> str:
    """What went wrong, in words: a connection refused or a certificate not trusted is the cause of
    the error that reports it."""
    if isinstance(error, trio.TooSlowError):
        return "no answer in time"
    cause = error.__cause__ if isinstance(error, (Unreachable, trio.BrokenResourceError)) and error.__cause__ is not None else error
    return f"{type(cause).__name__} {cause}"


def _json_failures(answer: dict[str, Any]) -> list[EntryFailure]:
    return [
        EntryFailure(str(entry.get("Id")), str(entry.get("Code", "")), str(entry.get("Message", "")), bool(entry.get("SenderFault")))
        for entry in answer.get("Failed") or ()
    ]


def _strip_namespaces(root: ElementTree.Element) -> None:
    for element in root.iter():
        element.tag = element.tag.rpartition("}")[2]
