"""A real `dovecote serve` whose storage fills: its data directory on a small tmpfs and on a
loop-mounted ext4 (filled until sends are refused, then freed), and a map at a small
--max-data-bytes. Sends are refused with a retryable error, /health and /metrics say why, one line
is logged when it starts and one when it ends, receives and deletes go on, sends resume by
themselves, and everything acknowledged is there after a restart."""

import os
import subprocess
import time
import uuid

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from .serve import ServeProcess

MIB = 1 << 20
BODY_BYTES = 100_000


def mount_tmpfs(mount_point, work_dir):
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)], capture_output=True)


def mount_ext4(mount_point, work_dir):
    image = work_dir / "ext4.img"
    subprocess.run(["truncate", "-s", "16m", str(image)], check=True)
    made = subprocess.run(["mkfs.ext4", "-q", str(image)], capture_output=True)
    if made.returncode != 0:
        return made
    return subprocess.run(["mount", "-o", "loop", str(image), str(mount_point)], capture_output=True)


def mounted_disk(mount, tmp_path):
    """A fixture's body: a small file system made by mount() at tmp_path/disk, unmounted after the test."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    try:
        mounted = mount(mount_point, tmp_path)
    except FileNotFoundError as missing:  # no truncate or mkfs.ext4 on this machine
        pytest.skip(f"cannot make the file system: {missing}")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount it here ({mounted.stderr.decode().strip()})")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture(params=[mount_tmpfs, mount_ext4], ids=["tmpfs", "ext4"])
def small_disk(request, tmp_path):
    yield from mounted_disk(request.param, tmp_path)


@pytest.fixture
def small_tmpfs(tmp_path):
    yield from mounted_disk(mount_tmpfs, tmp_path)


def sqs_client(broker: ServeProcess):
    return boto3.client(
        "sqs", endpoint_url=f"http://127.0.0.1:{broker.http_port}", region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test", config=Config(retries={"max_attempts": 1}),
    )


def health(broker: ServeProcess) -> dict:
    return httpx.get(f"http://127.0.0.1:{broker.http_port}/health", timeout=5).json()


def metric(broker: ServeProcess, sample: str) -> str:
    text = httpx.get(f"http://127.0.0.1:{broker.http_port}/metrics", timeout=5).text
    return next(line.rpartition(" ")[2] for line in text.splitlines() if line.startswith(sample + " "))


def fill(sqs, url: str) -> tuple[dict[str, str], ClientError]:
    """Send until refused: the bodies acknowledged (by message id) and the refusal."""
    acknowledged = {}
    for index in range(1000):
        body = f"{index:05d}-" + uuid.uuid4().hex * (BODY_BYTES // 32)
        try:
            acknowledged[sqs.send_message(QueueUrl=url, MessageBody=body)["MessageId"]] = body
        except ClientError as refusal:
            return acknowledged, refusal
    raise AssertionError("the disk never filled")


def used_share(path) -> float:
    disk = os.statvfs(path)
    return 1 - disk.f_bfree / disk.f_blocks


def wait_for(condition, timeout_s: float) -> float:
    """Seconds until condition() held."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, "timed out"
        time.sleep(0.05)
    return time.monotonic() - started


def drain(sqs, url: str, max_messages: int = 1000) -> dict[str, str]:
    received = {}
    while len(received) < max_messages:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60).get("Messages", [])
        if not batch:
            return received
        for message in batch:
            received[message["MessageId"]] = message["Body"]
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return received


def storage_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "dovecote.storage" in line or "sends" in line]


def test_a_full_disk_refuses_sends_until_freed_and_loses_nothing(small_disk, request, capsys):
    """Before: the full disk came back as EIO, sends failed with "Storage failed ... Input/output
    error", /health kept saying accepting_sends: true and nothing was logged."""
    data_dir = small_disk / "data"
    settings = ("--reserve-bytes", str(MIB), "--resume-free-bytes", str(MIB))
    broker = ServeProcess(data_dir, *settings).start()
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (3 * MIB))  # something else on the disk, deleted later
    sqs = sqs_client(broker)
    try:
        url = sqs.create_queue(QueueName="q")["QueueUrl"]
        acknowledged, refusal = fill(sqs, url)
        filled_at = used_share(small_disk)
        assert refusal.response["Error"]["Code"] == "ServiceUnavailable"
        assert refusal.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert "Storage is full" in refusal.response["Error"]["Message"]
        assert len(acknowledged) > 5 and filled_at > 0.8  # full, less the reserve given up
        assert health(broker)["accepting_sends"] is False and health(broker)["storage_full"] == "disk"
        assert metric(broker, 'dovecote_storage_full{cause="disk"}') == "1"
        assert metric(broker, "dovecote_accepting_sends") == "0"
        with pytest.raises(ClientError, match="ServiceUnavailable"):
            sqs.send_message(QueueUrl=url, MessageBody="still refused")
        with pytest.raises(ClientError, match="ServiceUnavailable"):  # it would only add data too
            sqs.create_queue(QueueName="another")
        consumed = drain(sqs, url, max_messages=3)  # receives and deletes go on
        assert len(consumed) >= 3 and all(acknowledged[id_] == body for id_, body in consumed.items())

        filler.unlink()
        resumed_after = wait_for(lambda: health(broker)["accepting_sends"], timeout_s=10)
        assert health(broker)["storage_full"] is None and metric(broker, 'dovecote_storage_full{cause="disk"}') == "0"
        after = sqs.send_message(QueueUrl=url, MessageBody="after the disk was freed")["MessageId"]
        sqs.create_queue(QueueName="another")
    finally:
        assert broker.terminate() == 0
    lines = storage_lines(broker.process.stderr.read())
    assert len(lines) == 2, lines
    assert "is full: refusing sends" in lines[0] and "room again" in lines[1]
    with capsys.disabled():
        print(f"\n{request.node.callspec.id}: sends refused at {filled_at:.0%} used, after {len(acknowledged)} sends of "
              f"{BODY_BYTES} B; resumed {resumed_after:.2f} s after the filler was deleted\n  " + "\n  ".join(lines))

    restarted = ServeProcess(data_dir, *settings).start()
    try:
        remaining = drain(sqs_client(restarted), url)
    finally:
        assert restarted.terminate() == 0
    expected = {id_: body for id_, body in acknowledged.items() if id_ not in consumed}
    expected[after] = "after the disk was freed"
    assert remaining == expected


def test_at_the_map_limit_sends_stay_refused_without_flapping_until_drained(tmp_path, capsys):
    """Before: the broker took the reserve back 2 s after a full map (the disk had room) and
    accepted sends again, to refuse them at the next one: accepting, refusing, every 2 s."""
    data_dir = tmp_path / "data"
    settings = ("--max-data-bytes", str(4 * MIB), "--reserve-bytes", str(MIB), "--resume-free-bytes", str(MIB))
    broker = ServeProcess(data_dir, *settings).start()
    sqs = sqs_client(broker)
    try:
        url = sqs.create_queue(QueueName="q")["QueueUrl"]
        acknowledged, refusal = fill(sqs, url)
        assert refusal.response["Error"]["Code"] == "ServiceUnavailable" and len(acknowledged) > 5
        samples = []
        started = time.monotonic()
        while time.monotonic() - started < 4.5:  # more than two space checks, a client retrying all along
            samples.append(health(broker))
            with pytest.raises(ClientError, match="ServiceUnavailable"):
                sqs.send_message(QueueUrl=url, MessageBody="x" * BODY_BYTES)
            time.sleep(0.1)
        assert all(s["accepting_sends"] is False and s["storage_full"] == "map" for s in samples), samples
        assert metric(broker, 'dovecote_storage_full{cause="map"}') == "1"
        consumed = drain(sqs, url)
        assert consumed == acknowledged
        resumed_after = wait_for(lambda: health(broker)["accepting_sends"], timeout_s=10)
        sqs.send_message(QueueUrl=url, MessageBody="after the drain")
    finally:
        assert broker.terminate() == 0
    lines = storage_lines(broker.process.stderr.read())
    assert len(lines) == 2, lines
    assert "max_data_bytes" in lines[0] and "room again" in lines[1]
    with capsys.disabled():
        print(f"\nmap: refused after {len(acknowledged)} sends of {BODY_BYTES} B at --max-data-bytes {4 * MIB}; "
              f"{len(samples)} samples of /health in 4.5 s all refusing; resumed {resumed_after:.2f} s after the drain"
              "\n  " + "\n  ".join(lines))


def flip_bytes_of(data_file, needle: bytes) -> int:
    """Flip a byte in every copy of needle in the file (a record's body: in the log and in the
    messages table, and in pages LMDB freed); the number of copies."""
    data = bytearray(data_file.read_bytes())
    copies = 0
    at = data.find(needle)
    while at >= 0:
        data[at + len(needle) // 2] ^= 0x55
        copies += 1
        at = data.find(needle, at + len(needle))
    data_file.write_bytes(bytes(data))
    return copies


def test_a_damaged_record_in_the_data_file_is_refused_and_salvage_serves_the_rest(tmp_path):
    data_dir = tmp_path / "data"
    broker = ServeProcess(data_dir).start()
    bodies = [f"record {index} " + uuid.uuid4().hex * 8 for index in range(5)]
    sqs = sqs_client(broker)
    try:
        # in clear, so that the damage can be aimed at a body (new queues encrypt by default)
        url = sqs.create_queue(QueueName="q", Attributes={"SqsManagedSseEnabled": "false"})["QueueUrl"]
        for body in bodies:
            sqs.send_message(QueueUrl=url, MessageBody=body)
    finally:
        assert broker.terminate() == 0
    assert flip_bytes_of(data_dir / "lmdb" / "data.mdb", bodies[2].encode()) >= 2

    refused = subprocess.run(ServeProcess(data_dir).command(), capture_output=True, text=True, timeout=60)
    assert refused.returncode == 3
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "damaged" in refused.stderr and "--salvage" in refused.stderr
    check = subprocess.run(
        [*ServeProcess(data_dir).program, "check", "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 1 and "damaged" in check.stdout and "Traceback" not in check.stderr

    salvaged = ServeProcess(data_dir, "--salvage").start()
    try:
        served = drain(sqs_client(salvaged), url)
        sqs_client(salvaged).send_message(QueueUrl=url, MessageBody="after the salvage")
    finally:
        assert salvaged.terminate() == 0
    salvage_log = salvaged.process.stderr.read()
    assert "salvage dropped" in salvage_log, salvage_log
    assert sorted(served.values()) == [body for index, body in enumerate(bodies) if index != 2]

    again = ServeProcess(data_dir).start()  # what salvage dropped is gone: a plain start serves the rest
    try:
        assert list(drain(sqs_client(again), url).values()) == ["after the salvage"]
    finally:
        assert again.terminate() == 0


@pytest.mark.long
def test_disk_full_cycles_under_load_lose_nothing_acknowledged_and_store_nothing_refused(small_tmpfs, capsys):
    """Producers and a consumer run while the disk fills and is freed again and again; then a kill -9
    on the full disk and a start on it. Every acknowledged send is received, no refused one is."""
    import threading

    from dovecote.actors.errors import BrokerError

    mount_point = small_tmpfs
    data_dir = mount_point / "data"
    # history of a few seconds: the log's copies of what was consumed do not fill the disk for good
    settings = ("--reserve-bytes", str(MIB), "--resume-free-bytes", str(MIB), "--history-hours", "0.001")
    broker = ServeProcess(data_dir, *settings).start()
    acknowledged: set[str] = set()
    refused: set[str] = set()
    unknown: set[str] = set()  # the connection failed: stored or not
    received: set[str] = set()
    stop = threading.Event()

    def produce(name: str) -> None:
        with broker.client() as client:
            for index in range(1_000_000):
                if stop.is_set():
                    return
                body = f"{name}-{index:07d}-" + "p" * 20_000
                try:
                    client.send_message("q", body)
                    acknowledged.add(body)
                    time.sleep(0.005)
                except BrokerError as error:
                    assert error.code == "ServiceUnavailable", error
                    refused.add(body)
                    time.sleep(0.01)
                except OSError:
                    unknown.add(body)
                    return

    def consume(client) -> int:
        messages = client.receive_message("q", max_number_of_messages=10, visibility_timeout=5)
        for message in messages:
            try:
                client.delete_message("q", message.receipt_handle)
            except BrokerError as error:  # the reserve used up: it is received again later
                assert error.code == "ServiceUnavailable", error
            received.add(message.body)
        return len(messages)

    def consumer() -> None:
        with broker.client() as client:
            while not stop.is_set():
                if not consume(client):
                    time.sleep(0.05)

    def fill_disk() -> None:
        with open(mount_point / "filler", "ab") as filler:
            try:
                while True:
                    filler.write(b"\0" * 65536)
                    filler.flush()
            except OSError:
                pass

    with broker.client() as client:
        client.create_queue("q")
    threads = [threading.Thread(target=produce, args=(f"p{n}",)) for n in range(2)] + [threading.Thread(target=consumer)]
    for thread in threads:
        thread.start()
    resumed_after = []
    try:
        for _ in range(8):
            time.sleep(1.0)
            fill_disk()
            wait_for(lambda: not health(broker)["accepting_sends"], timeout_s=10)
            time.sleep(2.0)
            (mount_point / "filler").unlink()
            resumed_after.append(wait_for(lambda: health(broker)["accepting_sends"], timeout_s=10))
        time.sleep(1.0)
        fill_disk()  # full again, for the kill
        wait_for(lambda: not health(broker)["accepting_sends"], timeout_s=10)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        broker.kill9()
    lines = storage_lines(broker.process.stderr.read())
    starts = [line for line in lines if "refusing sends" in line]
    ends = [line for line in lines if "room again" in line]
    # nine fills at least (the producers may fill the margin themselves between two), each one line,
    # and nothing else: trims and deletes on the full disk log nothing
    assert len(starts) >= 9 and len(ends) == len(starts) - 1 and len(lines) == len(starts) + len(ends), lines

    restarted = ServeProcess(data_dir, *settings).start()  # on the full disk
    try:
        with restarted.client() as client:
            while consume(client):  # consumers drain a full disk
                pass
        (mount_point / "filler").unlink()
        with restarted.client() as client:
            wait_for(lambda: not client.receive_message("q", max_number_of_messages=1, visibility_timeout=0), 10)
            client.send_message("q", "after")
            assert [m.body for m in client.receive_message("q")] == ["after"]
    finally:
        assert restarted.terminate() == 0
    assert acknowledged <= received, f"{len(acknowledged - received)} acknowledged sends lost"
    assert not received & refused, f"{len(received & refused)} refused sends were stored"
    assert received <= acknowledged | unknown
    with capsys.disabled():
        print(f"\n{len(acknowledged)} sends acknowledged, {len(refused)} refused, {len(received)} received over "
              f"{len(starts)} full disks; resumed after {min(resumed_after):.2f}..{max(resumed_after):.2f} s")
