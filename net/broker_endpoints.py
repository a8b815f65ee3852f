"""The broker's own HTTP endpoints, beside the AWS API on the HTTP port: /health, /metrics
(Prometheus text: the log's LSN, commits, records, trimmed records, whether sends are accepted),
/peek?queue=NAME[&max=10&after=SEQ&state=visible|in_flight|delayed&region=R] to browse a queue
without consuming it, and the certificate SNS signatures verify with (SigningCertURL)."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlsplit

from dovecote.actors.errors import KINDS
from dovecote.actors.mailbox import ReplySlot
from dovecote.actors.ops import Failure, PeekMessages, Result
from dovecote.actors.broker import Broker
from dovecote.actors.signing import CERTIFICATE_PATH
from dovecote.storage.writer import LogWriter

from .http_server import HttpRequest, HttpResponse, text_response
from .plain_data import plain


class BrokerEndpoints:
    def __init__(self, writer: LogWriter, broker: Broker, certificate: bytes) -> None:
        """certificate: the SNS signing certificate, PEM."""
        self._writer = writer
        self._broker = broker
        self._certificate = certificate

    async def handle(self, request: HttpRequest) -> HttpResponse:
        url = urlsplit(request.target)
        if request.method not in ("GET", "HEAD"):
            return text_response(405, "method not allowed\n")
        if url.path == CERTIFICATE_PATH:
            return HttpResponse(200, [("Content-Type", "application/x-pem-file")], self._certificate)
        if url.path == "/health":
            stats = self._writer.statistics()
            body = {"status": "ok", "last_lsn": stats.last_lsn, "accepting_sends": stats.accepting_sends}
            return text_response(200, json.dumps(body) + "\n", "application/json")
        if url.path == "/metrics":
            stats = self._writer.statistics()
            lines = [
                f"dovecote_log_last_lsn {stats.last_lsn}",
                f"dovecote_log_commits_total {stats.commits}",
                f"dovecote_log_records_total {stats.records}",
                f"dovecote_log_trimmed_records_total {stats.trimmed}",
                f"dovecote_accepting_sends {int(stats.accepting_sends)}",
            ]
            return text_response(200, "\n".join(lines) + "\n", "text/plain; version=0.0.4")
        if url.path == "/peek":
            return await self._peek(dict(parse_qsl(url.query)))
        return text_response(404, "not found\n")

    async def _peek(self, query: dict[str, str]) -> HttpResponse:
        try:
            op = PeekMessages(query["queue"], int(query.get("max", 10)), int(query.get("after", 0)), query.get("state", ""))
        except (KeyError, ValueError):
            return text_response(400, "usage: /peek?queue=NAME[&max=N&after=SEQ&state=STATE]\n")
        slot: ReplySlot[Result] = ReplySlot()
        self._broker.session(query.get("region")).submit(op, slot)
        result = await slot.wait()
        status = 200 if not isinstance(result, Failure) else KINDS[result.code].http_status
        return text_response(status, json.dumps(plain(result)) + "\n", "application/json")
