"""TLS on a real `dovecote serve`: aws-cli with --ca-bundle, the `dovecote` client commands, a
certificate reloaded on SIGHUP for new connections while open ones go on, an https SigningCertURL
that the npm `sns-validator` package accepts with only its host pattern set, and files that cannot
be loaded refused at start."""

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from ..push_endpoint import ThreadedEndpoint
from ..tls_certificates import CertificateAuthority
from .serve import ServeProcess

KEY = ("edge", "edge-secret")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(directory, "serve test CA")
    return ca, ca.issue("server", server=True)


def tls_broker(data_dir, ca, server, *extra: str) -> ServeProcess:
    return ServeProcess(
        data_dir, "--tls-cert", server.certificate_file, "--tls-key", server.key_file,
        "--access-key", f"{KEY[0]}:{KEY[1]}", *extra, tls=ca.certificate_file, access_key=KEY,
    )


def served_certificate(port: int, ca_file: str) -> bytes:
    """The DER certificate a new TLS connection to the port is shown."""
    context = ssl.create_default_context(cafile=ca_file)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.getpeercert(binary_form=True)


def wait_until(condition, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_aws_cli_with_its_ca_bundle(tmp_path, pki):
    ca, server = pki
    broker = tls_broker(tmp_path / "data", ca, server).start()
    home = tmp_path / "home"
    home.mkdir()
    environment = {
        **os.environ, "HOME": str(home), "AWS_ACCESS_KEY_ID": KEY[0], "AWS_SECRET_ACCESS_KEY": KEY[1],
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(home / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
    }

    def aws(*args: str, **overrides: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "awscli", "--endpoint-url", f"https://127.0.0.1:{broker.http_port}",
             "--ca-bundle", ca.certificate_file, "--output", "json", *args],
            capture_output=True, text=True, timeout=120, env={**environment, **overrides},
        )

    try:
        created = aws("sqs", "create-queue", "--queue-name", "tls-cli")
        assert created.returncode == 0, created.stderr
        url = json.loads(created.stdout)["QueueUrl"]
        assert url == f"https://127.0.0.1:{broker.http_port}/000000000000/tls-cli"
        assert aws("sqs", "send-message", "--queue-url", url, "--message-body", "over TLS").returncode == 0
        received = aws("sqs", "receive-message", "--queue-url", url)
        assert json.loads(received.stdout)["Messages"][0]["Body"] == "over TLS"
        topic = aws("sns", "create-topic", "--name", "tls-news")
        assert topic.returncode == 0, topic.stderr
        wrong = aws("sqs", "list-queues", AWS_SECRET_ACCESS_KEY="not-the-secret")
        assert wrong.returncode != 0 and "SignatureDoesNotMatch" in wrong.stderr
        untrusted = subprocess.run(
            [sys.executable, "-m", "awscli", "--endpoint-url", f"https://127.0.0.1:{broker.http_port}", "sqs", "list-queues"],
            capture_output=True, text=True, timeout=120, env=environment,
        )
        assert untrusted.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
    finally:
        assert broker.terminate() == 0


def test_the_dovecote_client_commands_over_tls_with_a_key(tmp_path, pki):
    ca, server = pki
    broker = tls_broker(tmp_path / "data", ca, server).start()

    def dovecote(*args: str, key: tuple[str, str] | None = KEY) -> subprocess.CompletedProcess:
        environment = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
        if key is not None:
            environment |= {"AWS_ACCESS_KEY_ID": key[0], "AWS_SECRET_ACCESS_KEY": key[1]}
        return subprocess.run(
            [sys.executable, "-m", "dovecote", *args, "--port", str(broker.port), "--ca-bundle", ca.certificate_file],
            capture_output=True, text=True, timeout=60, env=environment,
        )

    try:
        created = dovecote("create-queue", "cli")
        assert created.returncode == 0, created.stderr
        assert json.loads(created.stdout)["QueueUrl"].startswith("https://")
        refused = dovecote("list-queues", key=None)
        assert refused.returncode == 1 and json.loads(refused.stderr)["error"] == "MissingAuthenticationToken"
        wrong = dovecote("list-queues", key=(KEY[0], "wrong"))
        assert wrong.returncode == 1 and json.loads(wrong.stderr)["error"] == "SignatureDoesNotMatch"
    finally:
        assert broker.terminate() == 0


def test_sighup_serves_a_new_certificate_to_new_connections_and_keeps_the_open_ones(tmp_path, pki):
    ca, first = pki
    live = tmp_path / "live"
    live.mkdir()
    certificate_file, key_file = live / "server.pem", live / "server.key"
    shutil.copy(first.certificate_file, certificate_file)
    shutil.copy(first.key_file, key_file)
    broker = ServeProcess(
        tmp_path / "data", "--tls-cert", str(certificate_file), "--tls-key", str(key_file), tls=ca.certificate_file
    ).start()
    try:
        assert served_certificate(broker.port, ca.certificate_file) == first.der()
        open_before = broker.client()
        open_before.create_queue("before")

        renewed = ca.issue("server", server=True, stem="renewed")
        assert renewed.der() != first.der()
        shutil.copy(renewed.certificate_file, certificate_file)
        shutil.copy(renewed.key_file, key_file)
        broker.process.send_signal(signal.SIGHUP)
        wait_until(lambda: served_certificate(broker.port, ca.certificate_file) == renewed.der())
        assert served_certificate(broker.http_port, ca.certificate_file) == renewed.der()
        assert open_before.list_queues().queues  # the connection opened before goes on
        with broker.client() as after:
            after.create_queue("after")

        # A reload that fails changes nothing: the broker goes on with what it had.
        certificate_file.write_text("not a certificate")
        broker.process.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert served_certificate(broker.port, ca.certificate_file) == renewed.der()
        assert open_before.list_queues().queues
        open_before.close()
    finally:
        assert broker.terminate() == 0
    log = broker.process.stderr.read()
    assert "still serving the certificate loaded before" in log and str(certificate_file) in log
    assert "encryption at rest" not in log  # the same SIGHUP, with no master key file ever needed: nothing to say


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        (("--tls-cert", "{missing}", "--tls-key", "{missing}"), "cannot load the TLS certificate {missing}"),
        (("--tls-cert", "{certificate}"), "tls_cert (from --tls-cert) needs tls_key as well"),
        (("--tls-client-ca", "{certificate}"), "tls_client_ca (from --tls-client-ca) needs tls_cert as well"),
    ],
)
def test_tls_files_that_cannot_be_used_stop_serve_with_one_line(tmp_path, pki, arguments, says):
    _, server = pki
    names = {"missing": str(tmp_path / "missing.pem"), "certificate": server.certificate_file}
    arguments = [argument.format(**names) for argument in arguments]
    done = subprocess.run(
        [sys.executable, "-m", "dovecote", "serve", "--data-dir", str(tmp_path / "data"), "--port", "0", "--http-port", "0", *arguments],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert says.format(**names) in done.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "data").exists()  # refused before the store was opened


# --- SNS signatures, checked by the npm package applications use ------------------------------------

VALIDATE_JS = """
const fs = require("fs");
const MessageValidator = require("sns-validator");
const validator = new MessageValidator(new RegExp(process.argv[2]));
const message = JSON.parse(fs.readFileSync(process.argv[3], "utf8"));
validator.validate(message, (error, valid) => {
  if (error) { console.log("invalid: " + error.message); process.exit(1); }
  console.log("valid " + valid.Type);
});
"""


@pytest.fixture(scope="module")
def sns_validator(tmp_path_factory):
    """A directory with the npm sns-validator package installed (by npm, from the registry)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js and npm are needed to run the npm sns-validator package")
    directory = tmp_path_factory.mktemp("sns-validator")
    installed = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--silent", "sns-validator"],
        cwd=directory, capture_output=True, text=True, timeout=300,
    )
    assert installed.returncode == 0, f"npm install sns-validator failed: {installed.stderr}"
    (directory / "validate.js").write_text(VALIDATE_JS)
    return directory


def validate_with_npm(directory: Path, message: dict, host_pattern: str, ca_file: str) -> subprocess.CompletedProcess:
    path = directory / f"message-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(message))
    # Node trusts the test CA as an operator's machine would trust the broker's CA: by its own
    # setting, not by an option of the validator.
    environment = {**os.environ, "NODE_EXTRA_CA_CERTS": ca_file}
    return subprocess.run(
        ["node", "validate.js", host_pattern, str(path)], cwd=directory, capture_output=True, text=True, timeout=60, env=environment
    )


def test_sns_validator_accepts_what_the_broker_pushes(tmp_path, pki, sns_validator):
    ca, server = pki
    broker = tls_broker(tmp_path / "data", ca, server).start()
    https = ssl.create_default_context(cafile=ca.certificate_file)
    try:
        with ThreadedEndpoint().running() as endpoint:
            sns = boto3.client(
                "sns", endpoint_url=f"https://127.0.0.1:{broker.http_port}", region_name="us-east-1",
                verify=ca.certificate_file, aws_access_key_id=KEY[0], aws_secret_access_key=KEY[1],
                config=Config(retries={"max_attempts": 1}),
            )
            topic = sns.create_topic(Name="alerts")["TopicArn"]
            sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=endpoint.url)
            wait_until(lambda: endpoint.received())
            (confirmation,) = [r.json() for r in endpoint.received()]
            assert confirmation["Type"] == "SubscriptionConfirmation"
            assert confirmation["SigningCertURL"].startswith(f"https://127.0.0.1:{broker.http_port}/")
            assert confirmation["SubscribeURL"].startswith("https://")
            with urllib.request.urlopen(confirmation["SubscribeURL"], context=https) as answer:
                assert b"ConfirmSubscriptionResult" in answer.read()
            sns.publish(TopicArn=topic, Message="disk full", Subject="host-1")
            wait_until(lambda: len(endpoint.received()) == 2)
            notification = endpoint.received()[1].json()
        host_pattern = rf"^127\.0\.0\.1:{broker.http_port}$"
        for message in (confirmation, notification):
            validated = validate_with_npm(sns_validator, message, host_pattern, ca.certificate_file)
            assert validated.returncode == 0, validated.stdout + validated.stderr
            assert validated.stdout.strip() == f"valid {message['Type']}"
        # It does check: a changed message, or the validator's default (AWS's hosts only), fails.
        tampered = validate_with_npm(sns_validator, {**notification, "Message": "disk fine"}, host_pattern, ca.certificate_file)
        assert tampered.returncode == 1 and "invalid" in tampered.stdout
        default = validate_with_npm(sns_validator, notification, r"^sns\.[a-zA-Z0-9\-]{3,}\.amazonaws\.com$", ca.certificate_file)
        assert default.returncode == 1 and "invalid" in default.stdout
    finally:
        assert broker.terminate() == 0
