"""The native protocol's key handshake (version 2) against an in-process broker on real loopback
sockets: a key proven by an HMAC over the broker's nonce, every refusal an error frame with AWS's
code and then a close, and version 1 clients served only while the broker has no keys."""

import contextlib
import struct

import pytest
import trio

from dovecote.actors.errors import BrokerError
from dovecote.actors.ops import Failure, ListQueues
from dovecote.actors.principals import ANYONE, Keyring, Principal
from dovecote.app import ServeConfig, run_broker
from dovecote.net import frames
from dovecote.net.client import BlockingClient, open_client
from dovecote.net.limits import NetLimits
from dovecote.net.tcp_server import authenticate

from .test_servers import assert_closed, read_frames_until_closed, receive_exactly

DEADLINE_S = 20
KEYS = {"alice": "alice-secret", "bob": "bob-secret"}


@contextlib.asynccontextmanager
async def broker(tmp_path, access_keys=KEYS, **limits):
    config = ServeConfig(
        data_dir=str(tmp_path / "data"), port=0, http_port=0, access_keys=access_keys, limits=NetLimits(**limits)
    )
    stopping = trio.Event()
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            ports = await nursery.start(lambda task_status: run_broker(config, stopping=stopping, task_status=task_status))
            yield ports
            stopping.set()


async def receive_frame(stream) -> bytes:
    (length,) = struct.unpack(">I", await receive_exactly(stream, 4))
    return await receive_exactly(stream, length)


async def challenged(port):
    """A raw connection that said hello (version 2): (stream, the broker's nonce)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(frames.hello())
    assert frames.parse_welcome(await receive_exactly(stream, frames.WELCOME_BYTES)) == (2, frames.STATUS_OK)
    return stream, frames.decode_challenge(await receive_frame(stream)).nonce


def authenticate_frame(key_id="", proof=b"") -> bytes:
    out = bytearray()
    frames.encode_handshake(frames.Authenticate(key_id, proof), out)
    return bytes(out)


async def refusal(stream) -> Failure:
    """The one error frame a refused opening gets, then the close."""
    (frame,) = await read_frames_until_closed(stream)
    assert frame.id == 0
    return frame.result


# --- the rule, without sockets --------------------------------------------------------------------


def test_who_a_connection_acts_as():
    keyring, nonce = Keyring(KEYS), bytes(32)
    right = frames.Authenticate("alice", frames.key_proof("alice-secret", nonce, "alice"))
    assert authenticate(keyring, nonce, right, None) == Principal("alice")
    assert authenticate(keyring, nonce, right, Principal("bob")) == Principal("alice")  # a proven key wins
    assert authenticate(keyring, nonce, frames.Authenticate(), Principal("bob")) == Principal("bob")
    cases = {
        "MissingAuthenticationToken": frames.Authenticate(),
        "InvalidClientTokenId": frames.Authenticate("carol", right.proof),
        "SignatureDoesNotMatch": frames.Authenticate("alice", frames.key_proof("wrong", nonce, "alice")),
    }
    for code, message in cases.items():
        with pytest.raises(BrokerError) as caught:
            authenticate(keyring, nonce, message, None)
        assert caught.value.code == code
    # bob's proof does not pass for alice, nor a proof over another nonce
    for proof in (frames.key_proof("alice-secret", nonce, "bob"), frames.key_proof("alice-secret", bytes([1]) * 32, "alice")):
        with pytest.raises(BrokerError):
            authenticate(keyring, nonce, frames.Authenticate("alice", proof), None)
    # without keys nothing is checked: everyone is anyone
    assert authenticate(Keyring({}), nonce, frames.Authenticate("whoever", b"junk"), None) == ANYONE


# --- on the wire -----------------------------------------------------------------------------------


async def test_the_right_key_opens_the_connection_for_every_request(tmp_path):
    async with broker(tmp_path) as ports:
        async with open_client("127.0.0.1", ports.native, access_key=("alice", "alice-secret")) as client:
            url = await client.create_queue("q")
            await client.send_message(url, "hello")
            assert [m.body for m in await client.receive_message(url)] == ["hello"]
        stream, nonce = await challenged(ports.native)
        await stream.send_all(authenticate_frame("bob", frames.key_proof("bob-secret", nonce, "bob")))
        assert frames.decode_handshake_answer(await receive_frame(stream)) == frames.Authenticated("bob")
        out = bytearray()
        frames.encode_request(1, ListQueues(), out)
        await stream.send_all(bytes(out))
        assert frames.decode_response(await receive_frame(stream)).result.queues[0].endswith("/q")
        await stream.aclose()

        def blocking():
            with BlockingClient("127.0.0.1", ports.native, access_key=("bob", "bob-secret")) as client:
                return client.list_queues().queues

        assert len(await trio.to_thread.run_sync(blocking)) == 1


@pytest.mark.parametrize(
    ("access_key", "code"),
    [
        (("alice", "not-her-secret"), "SignatureDoesNotMatch"),
        (("carol", "alice-secret"), "InvalidClientTokenId"),
        (None, "MissingAuthenticationToken"),
    ],
)
async def test_a_wrong_secret_an_unknown_key_or_none_is_refused(tmp_path, access_key, code):
    async with broker(tmp_path) as ports:
        with pytest.raises(BrokerError) as caught:
            async with open_client("127.0.0.1", ports.native, access_key=access_key):
                pytest.fail("opened")
        assert caught.value.code == code
        with pytest.raises(BrokerError) as caught:
            await trio.to_thread.run_sync(lambda: BlockingClient("127.0.0.1", ports.native, access_key=access_key))
        assert caught.value.code == code
        if access_key is None:
            assert "requires an access key" in caught.value.message and "access_key=(ID, SECRET)" in caught.value.message


async def test_the_refusal_is_an_error_frame_then_a_close(tmp_path):
    async with broker(tmp_path) as ports:
        stream, nonce = await challenged(ports.native)
        await stream.send_all(authenticate_frame("alice", frames.key_proof("guess", nonce, "alice")))
        failure = await refusal(stream)
        assert failure.code == "SignatureDoesNotMatch" and "alice" in failure.message


async def test_a_request_instead_of_the_proof_is_refused(tmp_path):
    async with broker(tmp_path) as ports:
        stream, _ = await challenged(ports.native)
        out = bytearray()
        frames.encode_request(1, ListQueues(), out)
        await stream.send_all(bytes(out))
        failure = await refusal(stream)
        assert failure.code == "InvalidParameterValue" and "expected Authenticate" in failure.message


async def test_a_replayed_proof_is_refused(tmp_path):
    """A proof recorded from one connection (an eavesdropper on a network without TLS) does not
    open another: each connection has a nonce of its own."""
    async with broker(tmp_path) as ports:
        first, nonce = await challenged(ports.native)
        recorded = authenticate_frame("alice", frames.key_proof("alice-secret", nonce, "alice"))
        await first.send_all(recorded)
        assert frames.decode_handshake_answer(await receive_frame(first)) == frames.Authenticated("alice")
        second, other_nonce = await challenged(ports.native)
        assert other_nonce != nonce
        await second.send_all(recorded)
        assert (await refusal(second)).code == "SignatureDoesNotMatch"
        await first.aclose()


async def test_version_1_clients_are_refused_clearly_when_the_broker_has_keys(tmp_path):
    async with broker(tmp_path) as ports:
        stream = await trio.open_tcp_stream("127.0.0.1", ports.native)
        await stream.send_all(frames.hello(1))
        assert frames.parse_welcome(await receive_exactly(stream, frames.WELCOME_BYTES)) == (1, frames.STATUS_OK)
        failure = await refusal(stream)
        assert failure.code == "MissingAuthenticationToken"
        assert "protocol version 1 cannot present" in failure.message


async def test_without_keys_version_1_clients_are_served_and_any_key_is_accepted(tmp_path):
    async with broker(tmp_path, access_keys={}) as ports:
        stream = await trio.open_tcp_stream("127.0.0.1", ports.native)
        await stream.send_all(frames.hello(1))
        assert frames.parse_welcome(await receive_exactly(stream, frames.WELCOME_BYTES)) == (1, frames.STATUS_OK)
        out = bytearray()
        frames.encode_request(3, ListQueues(), out)
        await stream.send_all(bytes(out))
        assert frames.decode_response(await receive_frame(stream)).id == 3
        await stream.aclose()
        # As the AWS API accepts any signature without keys, a key given here is not checked.
        async with open_client("127.0.0.1", ports.native, access_key=("test", "test")) as client:
            await client.list_queues()
        stream, _ = await challenged(ports.native)
        await stream.send_all(authenticate_frame())
        assert frames.decode_handshake_answer(await receive_frame(stream)) == frames.Authenticated("")
        await stream.aclose()


async def test_an_opening_that_stalls_is_closed(tmp_path):
    async with broker(tmp_path, handshake_timeout_s=0.3) as ports:
        stream, _ = await challenged(ports.native)
        with trio.fail_after(5):
            await assert_closed(stream)
