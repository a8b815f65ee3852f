"""`dovecote serve`'s flags take their defaults from the config structs that own them, and say them;
every flag of every command says what it does."""

import argparse
import re
import subprocess
import sys

import pytest

import dovecote
from dovecote import config
from dovecote.actors.config import BrokerConfig
from dovecote.app import ServeConfig
from dovecote.cli import build_parser
from dovecote.net.http_push import SmtpRelay
from dovecote.net.tls import TlsSettings


def serve_config(*argv: str, environ=None) -> ServeConfig:
    args = build_parser().parse_args(["serve", *argv])
    return config.serve_config(config.resolve(config.flags_given(args), args.config, environ or {}).values)


def test_serve_without_flags_runs_with_the_config_structs_defaults():
    """Every flag left out gives its config field the struct's own default; the CLI differs only
    where it means to (signatures made in a worker thread, the HTTP URL from host and port)."""
    defaults = ServeConfig("data")
    http_url = f"http://{defaults.host}:{defaults.http_port}"
    assert serve_config("--data-dir", "data") == ServeConfig("data", broker=BrokerConfig(sign_in_thread=True, http_url=http_url))
    assert serve_config("--data-dir", "data", "--smtp-host", "relay.example").smtp == SmtpRelay("relay.example")


def test_every_flag_lands_where_the_table_says():
    chosen = serve_config(
        "--data-dir", "d", "--host", "0.0.0.0", "--port", "1", "--http-port", "2", "--public-url", "https://mq.example",
        "--sync", "os", "--commit-delay-ms", "9", "--history-hours", "1.5", "--max-data-bytes", "3", "--reserve-bytes", "4", "--resume-free-bytes", "5", "--salvage",
        "--access-key", "A:a", "--access-key", "B:b", "--account-id", "123456789012", "--region", "eu-west-1",
        "--unsigned-sqs-envelopes", "--push-timeout", "5", "--push-max-pending", "6", "--push-in-flight", "7",
        "--push-ca", "ca.pem", "--smtp-host", "relay", "--smtp-port", "8", "--smtp-starttls", "--smtp-user", "me",
        "--smtp-from", "me@example", "--allow-anonymous", "--tls-cert", "cert.pem", "--tls-key", "key.pem",
        "--tls-client-ca", "ca.pem", "--tls-client-auth", "optional", environ={"DOVECOTE_SMTP_PASSWORD": "pw"},
    )
    assert chosen == ServeConfig(
        "d", "0.0.0.0", 1, 2, "https://mq.example", "os", 1.5, 3, 4, 5, True, {"A": "a", "B": "b"},
        BrokerConfig(
            region="eu-west-1", account_id="123456789012", http_url="https://mq.example", sign_sqs_envelopes=False,
            sign_in_thread=True, max_pending_pushes=6,
        ),
        smtp=SmtpRelay("relay", 8, True, "me", "pw", "me@example"),
        push_timeout_s=5.0, push_max_in_flight=7, push_verify="ca.pem", allow_anonymous=True,
        tls=TlsSettings("cert.pem", "key.pem", "ca.pem", "optional"), commit_delay_ms=9.0,
    )


def test_with_tls_the_urls_the_broker_hands_out_are_https():
    chosen = serve_config("--data-dir", "d", "--http-port", "8443", "--tls-cert", "cert.pem", "--tls-key", "key.pem")
    assert chosen.tls == TlsSettings("cert.pem", "key.pem")
    assert chosen.broker.http_url == "https://127.0.0.1:8443"  # SubscribeURL, UnsubscribeURL, SigningCertURL


def serve_help(capsys) -> str:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    return " ".join(re.sub(r"-\n\s*", "-", capsys.readouterr().out).split())  # argparse wraps after hyphens


def test_serve_help_shows_every_default_and_the_exit_codes(capsys):
    help_text = serve_help(capsys)
    flags = [setting for setting in config.SETTINGS if setting.flag]
    assert help_text.count("(default ") == len(flags)
    for setting in flags:
        default = config.default_of(setting)
        if isinstance(default, bool):
            shown = "true" if default else "false"
        else:  # (not looked up with the booleans: 0.0 == False)
            shown = {None: "unset", (): "unset", "": "empty"}.get(default, str(default))
        assert f"{setting.explanation} (default {shown}" in help_text
    assert "defaults shown here, the TOML file given with --config" in help_text
    for code in range(6):
        assert f" {code} " in help_text.split("exit codes:")[1]


def test_every_flag_of_every_command_has_help():
    def parsers(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from parsers(sub)

    missing = [
        f"{parser.prog} {action.option_strings[0]}"
        for parser in parsers(build_parser())
        for action in parser._actions
        if action.option_strings and not action.help
    ]
    assert missing == []


def test_version():
    result = subprocess.run([sys.executable, "-m", "dovecote", "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == f"dovecote {dovecote.__version__}\n"
