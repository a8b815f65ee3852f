"""`dovecote serve`'s flags take their defaults from the config structs that own them, and say them."""

import re

import pytest

from dovecote.actors.config import BrokerConfig
from dovecote.app import ServeConfig
from dovecote.cli import build_parser, serve_config
from dovecote.net.http_push import SmtpRelay


def test_serve_without_flags_runs_with_the_config_structs_defaults(monkeypatch):
    """Every flag left out gives its config field the struct's own default; the CLI differs only
    where it means to (signatures made in a worker thread, the HTTP URL from host and port)."""
    monkeypatch.delenv("DOVECOTE_SMTP_PASSWORD", raising=False)
    defaults = ServeConfig("data")
    config = serve_config(build_parser().parse_args(["serve", "--data-dir", "data"]))
    http_url = f"http://{defaults.host}:{defaults.http_port}"
    assert config == ServeConfig("data", broker=BrokerConfig(sign_in_thread=True, http_url=http_url))

    relayed = serve_config(build_parser().parse_args(["serve", "--data-dir", "data", "--smtp-host", "relay.example"]))
    assert relayed.smtp == SmtpRelay("relay.example")


def test_serve_help_shows_every_default(capsys):
    """Each flag with a default to show (not none, off, empty) says it in --help."""
    defaults = vars(build_parser().parse_args(["serve"]))
    del defaults["command"]
    shown = [value for value in defaults.values() if value is not None and value is not False and value not in ("", [])]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    help_text = " ".join(re.sub(r"-\n\s*", "-", capsys.readouterr().out).split())  # argparse wraps after hyphens
    assert help_text.count("(default ") == len(shown)
    for value in shown:
        assert f"(default {value})" in help_text
