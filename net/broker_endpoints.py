"""The broker's own HTTP endpoints, beside the AWS API on the HTTP port: /health, /metrics
(Prometheus text, metrics.py: the log, the disk, the process, each queue and topic as its actor
reports itself, the audit's counts), /actors (each actor's report as JSON, with its last error),
/peek?queue=NAME[&max=10&after=SEQ&state=visible|in_flight|delayed&region=R] to browse a queue
without consuming it, and the certificate SNS signatures verify with (SigningCertURL).

When keys are configured, every request but those for /health and the certificate must prove one
(http_auth.py: SigV4, or HTTP Basic with the key's id and secret), else it is answered 401 and
counted and logged by the audit; a peek then acts as that key's principal."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from dovecote.actors.errors import KINDS
from dovecote.actors.mailbox import ReplySlot
from dovecote.actors.ops import Failure, PeekMessages, Result
from dovecote.actors.broker import ActorReport, Broker
from dovecote.actors.principals import ANYONE, Principal
from dovecote.actors.shovel_core import ShovelStatistics
from dovecote.actors.signing import CERTIFICATE_PATH
from dovecote.storage.writer import LogWriter

from .audit import DENIED_CODES, DOOR_ENDPOINTS, Audit
from .http_auth import BASIC_CHALLENGE, AuthenticationFailed, EndpointAuthenticator
from .http_server import HttpRequest, HttpResponse, split_target, text_response
from .plain_data import plain

if TYPE_CHECKING:
    from .metrics import ProcessReader

ENDPOINT_METHODS = "GET, HEAD, OPTIONS"
API_METHODS = "GET, POST, HEAD, OPTIONS"  # the AWS API's (GET and POST) at the root, beside the endpoints'
METRICS_MAX_QUEUES = 1000  # queues with series of their own in /metrics; the rest are added up
METRICS_MAX_TOPICS = 1000


class BrokerEndpoints:
    def __init__(
        self,
        writer: LogWriter,
        broker: Broker,
        certificate: Callable[[], bytes],
        *,
        data_dir: str | None = None,
        metrics_max_queues: int = METRICS_MAX_QUEUES,
        metrics_max_topics: int = METRICS_MAX_TOPICS,
        authenticator: EndpointAuthenticator | None = None,
        audit: Audit | None = None,
        shovel_statistics: Callable[[], list[ShovelStatistics]] | None = None,
    ) -> None:
        """certificate: gives the SNS signing certificate, PEM (made when first asked for).
        data_dir: the store's directory, whose size and free disk /metrics shows (None: not shown).
        authenticator: None serves everyone, as ANYONE (no keys configured).
        audit: told of every request that proves no key; its counts are in /metrics.
        shovel_statistics: the shovels' reports, for /metrics and /actors (None: no shovels)."""
        self._writer = writer
        self._broker = broker
        self._certificate = certificate
        self._data_dir = data_dir
        self._metrics_max_queues = metrics_max_queues
        self._metrics_max_topics = metrics_max_topics
        self._process: ProcessReader | None = None  # from the first scrape on
        self._authenticator = authenticator
        self._audit = audit if audit is not None else Audit()
        self._shovel_statistics = shovel_statistics or list

    async def handle(self, request: HttpRequest) -> HttpResponse:
        path, query = split_target(request.target)
        reading = request.method in ("GET", "HEAD")
        allowed = API_METHODS if path in ("", "/") else ENDPOINT_METHODS
        if request.method == "OPTIONS":  # what the port takes, asked before any key is proven (as a CORS preflight is)
            return HttpResponse(204, [("Allow", allowed)], b"")
        if reading and path == CERTIFICATE_PATH:
            return HttpResponse(200, [("Content-Type", "application/x-pem-file")], self._certificate())
        if reading and path == "/health":
            stats = self._writer.statistics()
            body = {
                "status": "ok", "last_lsn": stats.last_lsn, "accepting_sends": stats.accepting_sends,
                "storage_full": stats.storage_full or None,  # "disk" or "map" while sends are refused
            }
            return text_response(200, json.dumps(body) + "\n", "application/json")
        principal = ANYONE
        if self._authenticator is not None:
            try:
                principal = self._authenticator.authenticate(request)
            except AuthenticationFailed as failure:
                self._audit.authentication_failed(DOOR_ENDPOINTS, failure.reason, failure.key_id, request.peer)
                response = text_response(401, f"a key's proof is needed (SigV4 or HTTP Basic): {failure.reason}\n")
                return response._replace(headers=[*response.headers, ("WWW-Authenticate", BASIC_CHALLENGE)])
        if not reading:
            response = text_response(405, f"method {request.method[:20]} not allowed here; allowed: {allowed}\n")
            return response._replace(headers=[*response.headers, ("Allow", allowed)])
        if path == "/metrics":
            from . import metrics  # at the first scrape: start-up needs nothing of it

            if self._process is None:
                self._process = metrics.ProcessReader()
            reports = await self._broker.gather_statistics()
            text = metrics.render(
                self._writer.statistics(), reports, max_queues=self._metrics_max_queues,
                max_topics=self._metrics_max_topics, data_dir=self._data_dir, process=self._process,
                audit=self._audit.statistics(), shovel_statistics=self._shovel_statistics(),
                region=self._broker.config.region, now_ms=int(time.time() * 1000),
            )
            return text_response(200, text, metrics.CONTENT_TYPE)
        if path == "/actors":
            reports = [actor_report(report) for report in self._broker.statistics()]
            reports += [{"kind": "shovel", **shovel._asdict()} for shovel in self._shovel_statistics()]
            return text_response(200, json.dumps(reports) + "\n", "application/json")
        if path == "/peek":
            return await self._peek(dict(parse_qsl(query)), principal, request.peer)
        return text_response(404, "not found\n")

    async def _peek(self, query: dict[str, str], principal: Principal, peer: str) -> HttpResponse:
        try:
            op = PeekMessages(query["queue"], int(query.get("max", 10)), int(query.get("after", 0)), query.get("state", ""))
        except (KeyError, ValueError):
            return text_response(400, "usage: /peek?queue=NAME[&max=N&after=SEQ&state=STATE]\n")
        slot: ReplySlot[Result] = ReplySlot()
        self._broker.session(query.get("region"), principal).submit(op, slot)
        result = await slot.wait()
        if isinstance(result, Failure) and result.code in DENIED_CODES:
            self._audit.access_denied(DOOR_ENDPOINTS, "PeekMessages", principal.key_id, peer)
        status = 200 if not isinstance(result, Failure) else KINDS[result.code].http_status
        return text_response(status, json.dumps(plain(result)) + "\n", "application/json")


def actor_report(report: ActorReport) -> dict:
    """One actor's report as JSON: for a user debugging the broker."""
    return {
        "kind": report.kind,
        "region": report.region,
        "name": report.name,
        "mailbox": report.mailbox._asdict(),
        "restarts": report.health.restarts,
        "last_error": report.health.last_error,
        "stopped": report.health.stopped,
        "actor": report.actor._asdict() if report.actor is not None else None,
    }

