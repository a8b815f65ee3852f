"""The fsync audit: a real `dovecote serve` under strace, sends from boto3 and from native clients
(three clients at once, so commits group several requests), and for every acknowledged send the trace must show, in order:
the request read from its socket, its body written to the data file, an fdatasync (or fsync) of
the data file finished, and only then the acknowledgement (the MessageId boto3 got) written to that
socket, every one of these calls made by a thread of the broker's own process (not by a process
it started)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

import boto3
import pytest
from botocore.config import Config

from .serve import ServeProcess, strace_can_run

STRACE = shutil.which("strace")
CLIENTS = 3
SENDS_PER_CLIENT = 20
CLEAR = {"SqsManagedSseEnabled": "false"}  # the audit finds each body in the data written (new queues encrypt by default)
SYSCALLS = "fdatasync,fsync,write,writev,pwrite64,pwritev,pwritev2,recvfrom,recvmsg,sendto,sendmsg,clone,clone3,fork,vfork"


pytestmark = pytest.mark.skipif(not strace_can_run(), reason="strace is not installed or cannot trace processes here")


class Event(NamedTuple):
    index: int
    tid: int
    call: str
    fd: str  # what strace -yy says the descriptor is: a path, or TCP:[local->peer]
    text: str  # the line from the call's name on, with the data it carried


LINE = re.compile(r"^(\d+)\s+(\w+)\((\d+)<([^>]*)>(.*)$")
RESUMED = re.compile(r"^(\d+)\s+<\.\.\. (\w+) resumed>(.*)= (-?\d+)")
SYNCS = ("fdatasync", "fsync")
WRITES = ("write", "writev", "pwrite64", "pwritev", "pwritev2")
SOCKET_READS = ("recvfrom", "recvmsg")
SOCKET_WRITES = ("write", "writev", "sendto", "sendmsg")


class Trace(NamedTuple):
    events: list[Event]  # calls on descriptors, each where it started, by the broker's threads only
    syncs_finished: list[int]  # where an fsync of the data file by one of them finished
    other_processes: set[int]  # processes the broker started (and theirs): their calls are left out


SPAWN = re.compile(r"^(\d+)\s+(clone3?|fork|vfork)\((.*?)(?:= (\d+))?$")


def parse(lines: Iterable[str], data_file: str) -> Trace:
    """A call split by another thread's (`<unfinished ...>`) finishes at its `resumed` line, where a
    read shows what it read."""
    events: list[Event] = []
    syncs_finished: list[int] = []
    unfinished: dict[int, str] = {}  # tid -> its unfinished call: "sync", "thread", "process", or a socket read's fd
    others: set[int] = set()

    def spawned(tid: int, kind: str, child: int) -> None:
        if kind == "process" or tid in others:
            others.add(child)

    for index, line in enumerate(lines):
        if match := RESUMED.match(line):
            tid, call, result = int(match[1]), match[2], int(match[4])
            kind = unfinished.pop(tid, "")
            if kind == "sync" and result == 0 and tid not in others:
                syncs_finished.append(index)
            elif kind in ("thread", "process") and result > 0:
                spawned(tid, kind, result)
            elif kind.startswith("TCP:") and tid not in others:
                events.append(Event(index, tid, call, kind, call + match[3]))
            continue
        if match := SPAWN.match(line):
            kind = "thread" if match[2] != "fork" and match[2] != "vfork" and "CLONE_THREAD" in match[3] else "process"
            if match[4] is not None:
                spawned(int(match[1]), kind, int(match[4]))
            elif "<unfinished ...>" in line:
                unfinished[int(match[1])] = kind
            continue
        if not (match := LINE.match(line)) or int(match[1]) in others:
            continue
        event = Event(index, int(match[1]), match[2], match[4], match[2] + match[5])
        if event.call in SOCKET_READS and "<unfinished ...>" in line:
            unfinished[event.tid] = event.fd  # what it read is on the resumed line
            continue
        events.append(event)
        if event.call in SYNCS and event.fd == data_file:
            if "<unfinished ...>" in line:
                unfinished[event.tid] = "sync"
            elif line.rstrip().endswith("= 0"):
                syncs_finished.append(index)
    return Trace(events, syncs_finished, others)


def audit(trace: Trace, data_file: str, acknowledged: dict[str, str]) -> list[str]:
    """What is wrong with each acknowledged send (body -> MessageId): nothing, for a durable broker."""
    events, syncs_finished = trace.events, trace.syncs_finished
    problems = []
    for body, message_id in acknowledged.items():
        request = next((e for e in events if e.call in SOCKET_READS and e.fd.startswith("TCP:") and body in e.text), None)
        if request is None:
            problems.append(f"{body}: its request is not in the trace")
            continue
        ack = next(
            (e for e in events if e.index > request.index and e.fd == request.fd and e.call in SOCKET_WRITES and message_id in e.text),
            None,
        )
        if ack is None:
            problems.append(f"{body}: its acknowledgement {message_id} is not in the trace")
            continue
        # The first write of it is its own commit's (later commits may write its page again).
        written = next((e.index for e in events if request.index < e.index < ack.index and e.fd == data_file and e.call in WRITES and body in e.text), None)
        if written is None:
            problems.append(f"{body}: acknowledged without its body written to the data file first")
        elif not any(written < synced < ack.index for synced in syncs_finished):
            problems.append(f"{body}: acknowledged before an fsync of the data file after its write")
    return problems


def aws_sender(broker: ServeProcess) -> Callable[[], Callable[[str], str]]:
    """A boto3 client per sending thread; a send returns the MessageId."""
    def client():
        return boto3.client(
            "sqs", endpoint_url=f"http://127.0.0.1:{broker.http_port}", region_name="us-east-1",
            aws_access_key_id="test", aws_secret_access_key="test", config=Config(retries={"max_attempts": 1}),
        )

    url = client().create_queue(QueueName="audited", Attributes=CLEAR)["QueueUrl"]

    def connect() -> Callable[[str], str]:
        sqs = client()
        return lambda body: sqs.send_message(QueueUrl=url, MessageBody=body)["MessageId"]

    return connect


def native_sender(broker: ServeProcess) -> Callable[[], Callable[[str], str]]:
    """A native connection per sending thread (the blocking client); a send returns the MessageId."""
    with broker.client() as setup:
        setup.create_queue("audited", CLEAR)

    def connect() -> Callable[[str], str]:
        native = broker.client()
        return lambda body: native.send_message("audited", body).message_id

    return connect


@pytest.mark.parametrize("door", [aws_sender, native_sender], ids=["aws", "native"])
def test_every_acknowledged_send_follows_an_fdatasync_of_its_data(tmp_path, door):
    data_dir = tmp_path / "data"
    trace = tmp_path / "trace"
    strace = (STRACE, "-f", "-qq", "-yy", "-s", "65536", "-o", str(trace), "-e", f"trace={SYSCALLS}")
    broker = ServeProcess(data_dir, program=(*strace, sys.executable, "-m", "dovecote")).start(timeout_s=60)
    acknowledged: dict[str, str] = {}  # body -> MessageId; each client adds its own bodies
    try:
        connect = door(broker)

        def send(client_number: int) -> None:
            send_message = connect()
            for n in range(SENDS_PER_CLIENT):
                body = f"audited-{client_number}-{n:04d}"
                acknowledged[body] = send_message(body)

        threads = [threading.Thread(target=send, args=(c,)) for c in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        # strace does not pass a SIGTERM on: stop the broker itself, then strace ends with it.
        assert broker.process is not None
        (broker_pid,) = map(int, Path(f"/proc/{broker.process.pid}/task/{broker.process.pid}/children").read_text().split())
        os.kill(broker_pid, signal.SIGTERM)
        assert broker.process.wait(timeout=60) == 0
    assert len(acknowledged) == CLIENTS * SENDS_PER_CLIENT
    data_file = str((data_dir / "lmdb" / "data.mdb").resolve())
    parsed = parse(trace.read_text(errors="replace").splitlines(), data_file)
    assert parsed.syncs_finished, "the trace shows no fsync of the data file at all"
    problems = audit(parsed, data_file, acknowledged)
    assert not problems, f"{len(problems)} of {len(acknowledged)} acknowledgements not durable first: {problems[:5]}"
    print(f"fsync audit: {len(acknowledged)} acknowledgements checked, each after an fdatasync of its data")


def test_the_audit_finds_an_acknowledgement_sent_before_its_fsync():
    """The audit itself, on a hand-made trace: an ack between the write and the fsync is caught."""
    data = "/d/lmdb/data.mdb"
    sock = "TCP:[127.0.0.1:1->127.0.0.1:2]"
    good = [
        f'7 recvfrom(5<{sock}>, "POST ... audited-0-0001 ...", 65536, 0, NULL, NULL) = 300',
        f'8 pwrite64(3<{data}>, "... audited-0-0001 ...", 4096, 8192) = 4096',
        f"8 fdatasync(3<{data}>) = 0",
        f'7 sendto(5<{sock}>, "HTTP/1.1 200 ... id-1 ...", 200, 0, NULL, 0) = 200',
    ]
    late = [good[0], good[1], good[3], good[2]]
    split = [good[0], good[1], f"8 fdatasync(3<{data}> <unfinished ...>", good[3], "8 <... fdatasync resumed>) = 0"]
    # an fsync by another process (one the broker started) does not count
    child = ["7 vfork( <unfinished ...>", "7 <... vfork resumed>) = 9", good[0], good[1], f"9 fdatasync(3<{data}>) = 0", good[3]]
    thread = ["7 clone3({flags=CLONE_VM|CLONE_THREAD, exit_signal=0}, 88) = 8", *good]
    resumed = [f"7 recvfrom(5<{sock}>,  <unfinished ...>", '7 <... recvfrom resumed>"POST ... audited-0-0001 ...", 65536, 0, NULL, NULL) = 300', *good[1:]]
    for lines, expected in ((good, []), (late, ["before an fsync"]), (split, ["before an fsync"]), (child, ["before an fsync"]), (thread, []), (resumed, [])):
        problems = audit(parse(lines, data), data, {"audited-0-0001": "id-1"})
        assert [p for p in problems if not any(e in p for e in expected)] == [] and len(problems) == len(expected), problems
