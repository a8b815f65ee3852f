"""The audit trail: every failure counted, log lines rate-limited per kind (a flood writes about one
a second and says how many it stood for), memory bounded whatever the peers and key ids."""

from __future__ import annotations

import logging

import prometheus_client.parser

from dovecote.net import metrics
from dovecote.net.audit import DOOR_AWS, DOOR_ENDPOINTS, DOOR_NATIVE, OTHER, Audit, AuditStatistics


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def audit_with_clock(**options) -> tuple[Audit, FakeClock, list[logging.LogRecord]]:
    clock = FakeClock()
    records: list[logging.LogRecord] = []
    logger = logging.getLogger(f"test.audit.{id(clock)}")
    logger.propagate = False

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger.addHandler(Keep())
    return Audit(clock=clock, logger=logger, **options), clock, records


def test_a_flood_writes_one_line_a_second_and_counts_every_event():
    audit, clock, records = audit_with_clock()
    for second in range(10):
        for number in range(10_000):
            clock.now_s = 100.0 + second + number / 10_000
            audit.authentication_failed(DOOR_AWS, "SignatureDoesNotMatch", f"AKID{number}", f"10.0.0.{number % 250}:{number}")
    assert audit.statistics().authentication_failures == ((DOOR_AWS, "SignatureDoesNotMatch", 100_000),)
    assert len(records) == 10
    first, second = records[0].getMessage(), records[1].getMessage()
    assert first == "authentication failed at the aws door from 10.0.0.0:0: SignatureDoesNotMatch, key id 'AKID0'"
    assert second.endswith("(and 9999 more like it in the last 1.0 s)")
    assert records[0].door == DOOR_AWS and records[0].peer == "10.0.0.0:0" and records[0].key_id == "AKID0"
    assert records[0].reason == "SignatureDoesNotMatch" and records[0].levelno == logging.WARNING


def test_each_kind_has_its_own_limit():
    audit, clock, records = audit_with_clock()
    audit.authentication_failed(DOOR_AWS, "MissingAuthenticationToken", "", "1.2.3.4:5")
    audit.authentication_failed(DOOR_ENDPOINTS, "MissingAuthenticationToken", "", "1.2.3.4:6")
    audit.access_denied(DOOR_NATIVE, "DeleteQueue", "AKID", "1.2.3.4:7")
    audit.access_denied(DOOR_NATIVE, "DeleteQueue", "AKID", "1.2.3.4:7")  # held back
    assert [r.getMessage() for r in records] == [
        "authentication failed at the aws door from 1.2.3.4:5: MissingAuthenticationToken, key id none",
        "authentication failed at the endpoints door from 1.2.3.4:6: MissingAuthenticationToken, key id none",
        "access denied at the native door from 1.2.3.4:7: DeleteQueue, key id 'AKID'",
    ]
    assert records[2].action == "DeleteQueue"
    clock.now_s += 5
    audit.access_denied(DOOR_NATIVE, "DeleteQueue", "AKID", "1.2.3.4:7")
    assert records[-1].getMessage().endswith("(and 1 more like it in the last 5.0 s)")
    assert audit.statistics() == AuditStatistics(
        ((DOOR_AWS, "MissingAuthenticationToken", 1), (DOOR_ENDPOINTS, "MissingAuthenticationToken", 1)),
        ((DOOR_NATIVE, "DeleteQueue", 3),),
    )


def test_memory_is_bounded_whatever_the_reasons_peers_and_key_ids():
    audit, _, records = audit_with_clock(max_series=8)
    for number in range(5000):
        audit.access_denied(DOOR_AWS, f"Action{number}", "k" * 10_000, f"[fe80::{number:x}]:{number}")
    denied = audit.statistics().access_denied
    assert len(denied) == 9 and denied[-1] == (DOOR_AWS, OTHER, 5000 - 8)
    assert len(audit._denied) == 9
    assert all(len(record.getMessage()) < 300 for record in records)  # the key id is cut, and quoted
    assert len(records) == 9


def test_a_key_id_cannot_forge_a_log_line():
    audit, _, records = audit_with_clock()
    audit.authentication_failed(DOOR_ENDPOINTS, "InvalidClientTokenId", "AKID\nERROR forged line", "1.2.3.4:5")
    assert "\n" not in records[0].getMessage() and "'AKID\\nERROR forged line'" in records[0].getMessage()


def test_the_counts_in_the_prometheus_format():
    audit, _, _ = audit_with_clock()
    audit.authentication_failed(DOOR_AWS, "RequestExpired", "AKID", "1.2.3.4:5")
    audit.authentication_failed(DOOR_AWS, "RequestExpired", "AKID", "1.2.3.4:5")
    audit.access_denied(DOOR_ENDPOINTS, 'odd"name\\', "AKID", "1.2.3.4:5")
    out = metrics.Exposition()
    metrics.audit_trail(out, audit.statistics())
    families = {family.name: family for family in prometheus_client.parser.text_string_to_metric_families(out.text())}
    (failures,) = families["dovecote_auth_failures"].samples
    assert failures.labels == {"door": "aws", "reason": "RequestExpired"} and failures.value == 2
    (denied,) = families["dovecote_access_denied"].samples
    assert denied.labels == {"door": "endpoints", "action": 'odd"name\\'} and denied.value == 1
    empty = metrics.Exposition()
    metrics.audit_trail(empty, Audit().statistics())
    assert "# TYPE dovecote_auth_failures_total counter" in empty.text()
