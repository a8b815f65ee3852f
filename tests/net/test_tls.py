"""TLS on both listeners of an in-process broker, on real loopback sockets, with certificates from
a test CA (tests/tls_certificates.py): the native clients with tls=, boto3 verifying against the
CA, plain clients told what is wrong, and client certificates (mTLS) acting as the key they name."""

import contextlib
import ssl

import boto3
import botocore
import botocore.exceptions
import httpx
import pytest
import trio
from botocore.config import Config

from dovecote.actors.errors import BrokerError
from dovecote.app import ServeConfig, run_broker
from dovecote.net import frames
from dovecote.net.client import BlockingClient, open_client
from dovecote.net.tls import ServerTls, TlsError, TlsSettings

from ..tls_certificates import CertificateAuthority
from .test_native_auth import receive_frame
from .test_servers import receive_exactly

DEADLINE_S = 30
KEYS = {"alice": "alice-secret", "bob": "bob-secret"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA with a server certificate and client certificates for alice and for a name no key
    has, and another CA with a client certificate for alice."""
    directory = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(directory / "ca", "test CA")
    other = CertificateAuthority(directory / "other", "other CA")
    return {
        "ca": ca,
        "server": ca.issue("server", server=True),
        "alice": ca.issue("alice"),
        "nobody": ca.issue("nobody"),
        "alice from another CA": other.issue("alice"),
    }


@contextlib.asynccontextmanager
async def broker(tmp_path, pki, access_keys=KEYS, client_auth=None):
    tls = TlsSettings(
        pki["server"].certificate_file, pki["server"].key_file,
        client_ca_file=pki["ca"].certificate_file if client_auth else None, client_auth=client_auth or "required",
    )
    config = ServeConfig(data_dir=str(tmp_path / "data"), port=0, http_port=0, access_keys=access_keys, tls=tls)
    stopping = trio.Event()
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            ports = await nursery.start(lambda task_status: run_broker(config, stopping=stopping, task_status=task_status))
            yield ports
            stopping.set()


def sqs_client(http_port, ca_file, **config):
    return boto3.client(
        "sqs", endpoint_url=f"https://127.0.0.1:{http_port}", region_name="us-east-1", verify=ca_file,
        aws_access_key_id=config.pop("key_id", "alice"), aws_secret_access_key=config.pop("secret", "alice-secret"),
        config=Config(retries={"max_attempts": 1}, **config),
    )


async def test_the_native_clients_speak_tls_with_a_ca_file_or_a_context(tmp_path, pki):
    ca_file = pki["ca"].certificate_file
    async with broker(tmp_path, pki) as ports:
        async with open_client("127.0.0.1", ports.native, tls=ca_file, access_key=("alice", "alice-secret")) as client:
            url = await client.create_queue("q")
            assert url == f"https://127.0.0.1:{ports.http}/000000000000/q"  # the public URL is https
            await client.send_message(url, "over TLS")

        def blocking():
            context = ssl.create_default_context(cafile=ca_file)
            with BlockingClient("127.0.0.1", ports.native, tls=context, access_key=("bob", "bob-secret")) as client:
                (message,) = client.receive_message("q")
                return message.body

        assert await trio.to_thread.run_sync(blocking) == "over TLS"


async def test_a_client_without_tls_or_not_trusting_the_certificate_is_told_why(tmp_path, pki):
    async with broker(tmp_path, pki) as ports:
        with pytest.raises(ConnectionError, match="requires TLS"):
            async with open_client("127.0.0.1", ports.native, access_key=("alice", "alice-secret")):
                pass
        with pytest.raises(ConnectionError, match="requires TLS"):
            await trio.to_thread.run_sync(lambda: BlockingClient("127.0.0.1", ports.native))
        # The system's CAs do not know the test CA.
        with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            async with open_client("127.0.0.1", ports.native, tls=True):
                pass
        with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await trio.to_thread.run_sync(lambda: BlockingClient("127.0.0.1", ports.native, tls=True))
        # Plain HTTP on the HTTPS port gets a plain answer saying so.
        async with httpx.AsyncClient() as http:
            answer = await http.get(f"http://127.0.0.1:{ports.http}/health")
        assert answer.status_code == 400 and "speaks HTTPS" in answer.text


async def test_boto3_over_tls_verifies_against_the_ca(tmp_path, pki):
    ca_file = pki["ca"].certificate_file
    async with broker(tmp_path, pki) as ports:

        def session():
            sqs = sqs_client(ports.http, ca_file)
            url = sqs.create_queue(QueueName="tls-jobs")["QueueUrl"]
            assert url.startswith(f"https://127.0.0.1:{ports.http}/")
            sqs.send_message(QueueUrl=url, MessageBody="signed, over TLS")
            (message,) = sqs.receive_message(QueueUrl=url)["Messages"]
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            with pytest.raises(botocore.exceptions.SSLError):
                sqs_client(ports.http, True).list_queues()  # certifi's CAs do not know the test CA
            with pytest.raises(botocore.exceptions.ClientError) as caught:
                sqs_client(ports.http, ca_file, secret="wrong").list_queues()
            assert caught.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
            return message["Body"]

        assert await trio.to_thread.run_sync(session) == "signed, over TLS"
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=ca_file)) as http:
            assert (await http.get(f"https://127.0.0.1:{ports.http}/health")).status_code == 200


async def test_a_client_certificate_acts_as_the_key_it_names(tmp_path, pki):
    ca_file = pki["ca"].certificate_file
    alice = pki["alice"].client_context(ca_file)
    async with broker(tmp_path, pki, client_auth="required") as ports:
        # No key needed: the certificate names alice.
        async with open_client("127.0.0.1", ports.native, tls=alice) as client:
            await client.create_queue("by-certificate")
        stream = trio.SSLStream(await trio.open_tcp_stream("127.0.0.1", ports.native), alice, server_hostname="127.0.0.1")
        await stream.send_all(frames.hello())
        assert frames.parse_welcome(await receive_exactly(stream, frames.WELCOME_BYTES)) == (2, frames.STATUS_OK)
        await receive_frame(stream)  # the challenge
        out = bytearray()
        frames.encode_handshake(frames.Authenticate(), out)
        await stream.send_all(bytes(out))
        assert frames.decode_handshake_answer(await receive_frame(stream)) == frames.Authenticated("alice")
        await stream.aclose()

        def unsigned_boto3():
            sqs = sqs_client(ports.http, ca_file, signature_version=botocore.UNSIGNED, client_cert=(
                pki["alice"].certificate_file, pki["alice"].key_file,
            ))
            return sqs.list_queues()["QueueUrls"]

        assert len(await trio.to_thread.run_sync(unsigned_boto3)) == 1
        # A certificate naming no key proves nothing more: that client needs a key.
        nobody = pki["nobody"].client_context(ca_file)
        with pytest.raises(BrokerError) as caught:
            async with open_client("127.0.0.1", ports.native, tls=nobody):
                pass
        assert caught.value.code == "MissingAuthenticationToken" and "client certificate" in caught.value.message
        async with open_client("127.0.0.1", ports.native, tls=nobody, access_key=("bob", "bob-secret")) as client:
            await client.list_queues()


@pytest.mark.parametrize("certificate", [None, "alice from another CA"])
async def test_required_client_certificates_refuse_none_or_one_of_another_ca(tmp_path, pki, certificate):
    ca_file = pki["ca"].certificate_file
    context = pki[certificate].client_context(ca_file) if certificate else ssl.create_default_context(cafile=ca_file)
    refused = "refused this client's certificate, or the lack of one|TLS connection to the broker failed"
    async with broker(tmp_path, pki, client_auth="required") as ports:
        with pytest.raises(ConnectionError, match=refused):
            async with open_client("127.0.0.1", ports.native, tls=context, access_key=("alice", "alice-secret")):
                pass
        with pytest.raises(ConnectionError, match=refused):
            await trio.to_thread.run_sync(
                lambda: BlockingClient("127.0.0.1", ports.native, tls=context, access_key=("alice", "alice-secret"))
            )

        def boto3_refused():
            client_cert = (pki[certificate].certificate_file, pki[certificate].key_file) if certificate else None
            with pytest.raises((botocore.exceptions.SSLError, botocore.exceptions.ConnectionClosedError, botocore.exceptions.EndpointConnectionError)):
                sqs_client(ports.http, ca_file, client_cert=client_cert).list_queues()

        await trio.to_thread.run_sync(boto3_refused)


async def test_optional_client_certificates_let_a_key_in_instead(tmp_path, pki):
    ca_file = pki["ca"].certificate_file
    async with broker(tmp_path, pki, client_auth="optional") as ports:
        async with open_client("127.0.0.1", ports.native, tls=ca_file, access_key=("bob", "bob-secret")) as client:
            await client.list_queues()
        async with open_client("127.0.0.1", ports.native, tls=pki["alice"].client_context(ca_file)) as client:
            await client.list_queues()
        with pytest.raises(BrokerError) as caught:
            async with open_client("127.0.0.1", ports.native, tls=ca_file):
                pass
        assert caught.value.code == "MissingAuthenticationToken"
        # A certificate given must still verify.
        with pytest.raises(ConnectionError, match="refused this client's certificate"):
            async with open_client("127.0.0.1", ports.native, tls=pki["alice from another CA"].client_context(ca_file)):
                pass

        def http_requests():
            assert sqs_client(ports.http, ca_file, key_id="bob", secret="bob-secret").list_queues()
            with pytest.raises(botocore.exceptions.ClientError) as caught:
                sqs_client(ports.http, ca_file, signature_version=botocore.UNSIGNED).list_queues()
            return caught.value.response["Error"]["Code"]

        assert await trio.to_thread.run_sync(http_requests) == "MissingAuthenticationToken"


def test_unloadable_files_are_named(tmp_path, pki):
    server = pki["server"]
    with pytest.raises(TlsError, match="missing.pem"):
        ServerTls(TlsSettings(str(tmp_path / "missing.pem"), server.key_file))
    with pytest.raises(TlsError, match="with its key"):
        ServerTls(TlsSettings(server.certificate_file, pki["alice"].key_file))  # not its key
    with pytest.raises(TlsError, match="client CA"):
        ServerTls(TlsSettings(server.certificate_file, server.key_file, client_ca_file=server.key_file))
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(open(server.key_file, "rb").read(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
    ))
    with pytest.raises(TlsError, match="is encrypted"):  # not a prompt on the terminal
        ServerTls(TlsSettings(server.certificate_file, str(encrypted)))
