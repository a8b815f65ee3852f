"""The broker's own HTTP endpoints, beside the AWS API on the HTTP port: /health, /metrics
(Prometheus text: the log's LSN, commits, records, trimmed records, whether sends are accepted, and
each queue's and topic's actor as it reports itself), /actors (the same reports as JSON, with each
actor's last error), /peek?queue=NAME[&max=10&after=SEQ&state=visible|in_flight|delayed&region=R]
to browse a queue without consuming it, and the certificate SNS signatures verify with
(SigningCertURL)."""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import parse_qsl, urlsplit

from dovecote.actors.errors import KINDS
from dovecote.actors.mailbox import ReplySlot
from dovecote.actors.ops import Failure, PeekMessages, Result
from dovecote.actors.broker import ActorReport, Broker
from dovecote.actors.signing import CERTIFICATE_PATH
from dovecote.storage.writer import LogWriter

from .http_server import HttpRequest, HttpResponse, text_response
from .plain_data import plain


class BrokerEndpoints:
    def __init__(self, writer: LogWriter, broker: Broker, certificate: Callable[[], bytes]) -> None:
        """certificate: gives the SNS signing certificate, PEM (made when first asked for)."""
        self._writer = writer
        self._broker = broker
        self._certificate = certificate

    async def handle(self, request: HttpRequest) -> HttpResponse:
        url = urlsplit(request.target)
        if request.method not in ("GET", "HEAD"):
            return text_response(405, "method not allowed\n")
        if url.path == CERTIFICATE_PATH:
            return HttpResponse(200, [("Content-Type", "application/x-pem-file")], self._certificate())
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
                *actor_metrics(self._broker.statistics()),
            ]
            return text_response(200, "\n".join(lines) + "\n", "text/plain; version=0.0.4")
        if url.path == "/actors":
            reports = [actor_report(report) for report in self._broker.statistics()]
            return text_response(200, json.dumps(reports) + "\n", "application/json")
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


# The metric of each field of an actor's statistics.
_ACTOR_METRICS = {
    "cycles": "cycles_total",
    "cycles_in_flight": "cycles_waiting_for_disk",
    "messages": "messages",
    "in_flight_messages": "messages_in_flight",
    "waiters": "long_polls_waiting",
    "subscriptions": "subscriptions",
    "delivery_actors": "delivery_actors",
    "pending_pushes": "pushes_pending",
}


def actor_metrics(reports: list[ActorReport]) -> list[str]:
    """Each actor's mailbox, supervisor record and own counters, as Prometheus samples labelled with
    the actor's kind, region and name."""
    lines: list[str] = []
    for report in reports:
        labels = f'{{kind="{report.kind}",region="{report.region}",name="{report.name}"}}'
        lines += [
            f"dovecote_actor_mailbox_requests{labels} {report.mailbox.requests}",
            f"dovecote_actor_mailbox_carried_messages{labels} {report.mailbox.carried}",
            f"dovecote_actor_restarts_total{labels} {report.health.restarts}",
            f"dovecote_actor_stopped{labels} {int(report.health.stopped)}",
        ]
        if report.actor is not None:
            for field, value in report.actor._asdict().items():
                lines.append(f"dovecote_{report.kind}_{_ACTOR_METRICS[field]}{labels} {value}")
    return lines


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

