"""The settings table: one key a setting, read from a TOML file, DOVECOTE_<KEY> variables and flags
in that order of precedence, errors that name the key and the line, and `dovecote config`'s output,
which is itself a configuration file."""

import argparse
import subprocess
import sys
import tomllib

import pytest

from dovecote import config
from dovecote.actors.functions import FunctionSettings
from dovecote.cli import build_parser
from dovecote.net.mobile_sink import MobileSink


def resolve(*argv: str, environ=None) -> config.Resolved:
    args = build_parser().parse_args(["serve", *argv])
    return config.resolve(config.flags_given(args), args.config, environ or {})


def test_every_serve_flag_is_a_key_of_the_table():
    """...named as the flag with underscores, with a DOVECOTE_ variable of the same name."""
    commands = next(action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction))
    serve = commands.choices["serve"]
    options = {option for action in serve._actions for option in action.option_strings if option.startswith("--")}
    options -= {"--help", "--config"}
    flagged = {setting.option for setting in config.SETTINGS if setting.flag}
    negated = {"--no-" + setting.option[2:] for setting in config.SETTINGS if setting.kind is bool}
    assert options == flagged | negated
    for setting in config.SETTINGS:
        assert setting.option == "--" + setting.key.replace("_", "-") and setting.env == "DOVECOTE_" + setting.key.upper()
    # a password never on a command line, nor the keys with permissions, remotes and shovels (their tables are the file's)
    assert [s.key for s in config.SETTINGS if not s.flag] == ["key", "remote", "shovel", "smtp_password"]


def test_defaults_then_the_file_then_the_environment_then_flags(tmp_path):
    file = tmp_path / "dovecote.toml"
    file.write_text('port = 1\nhttp_port = 2\nregion = "file-region"\nhistory_hours = 3\nsalvage = true\n')
    resolved = resolve(
        "--config", str(file), "--region", "flag-region", "--no-salvage",
        environ={"DOVECOTE_HTTP_PORT": "20", "DOVECOTE_REGION": "env-region", "DOVECOTE_HISTORY_HOURS": "0.5"},
    )
    values, sources = resolved.values, resolved.sources
    assert (values["host"], sources["host"]) == ("127.0.0.1", config.DEFAULT)
    assert (values["port"], sources["port"]) == (1, str(file))
    assert (values["http_port"], sources["http_port"]) == (20, "$DOVECOTE_HTTP_PORT")
    assert (values["history_hours"], sources["history_hours"]) == (0.5, "$DOVECOTE_HISTORY_HOURS")
    assert (values["region"], sources["region"]) == ("flag-region", "--region")
    assert (values["salvage"], sources["salvage"]) == (False, "--no-salvage")


def test_environment_values_are_read_by_their_type():
    resolved = resolve(environ={
        "DOVECOTE_SALVAGE": "yes", "DOVECOTE_SMTP_STARTTLS": "0", "DOVECOTE_ACCESS_KEY": "A:a, B:b",
        "DOVECOTE_SYNC": "OS", "DOVECOTE_LOG_LEVEL": "debug", "DOVECOTE_PUBLIC_URL": "", "DOVECOTE_FUZZ_EXAMPLES": "5",
    })
    values = resolved.values
    assert values["salvage"] is True and values["smtp_starttls"] is False
    assert values["access_key"] == ("A:a", "B:b")
    assert values["sync"] == "os" and values["log_level"] == "DEBUG"  # choices are spelled as the table spells them
    assert values["public_url"] is None  # empty: unset


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"DOVECOTE_PORT": "seventy"}, "$DOVECOTE_PORT: expected an integer, not 'seventy'"),
        ({"DOVECOTE_SALVAGE": "maybe"}, "$DOVECOTE_SALVAGE: expected true or false, not 'maybe'"),
        ({"DOVECOTE_SYNC": "sometimes"}, "$DOVECOTE_SYNC: expected one of full, os, not 'sometimes'"),
        ({"DOVECOTE_ACCESS_KEY": "A:a,secret-without-id"}, "$DOVECOTE_ACCESS_KEY: each key is ID:SECRET, and key 2 is not"),
        ({"DOVECOTE_COMMIT_DELAY_MS": "-1"}, "$DOVECOTE_COMMIT_DELAY_MS: expected 0 to 1000 milliseconds, not -1"),
    ],
)
def test_a_bad_environment_variable_is_named(environ, message):
    with pytest.raises(config.ConfigError) as error:
        resolve(environ=environ)
    assert str(error.value) == message


@pytest.mark.parametrize(
    "text, message",
    [
        ('port = 1\n\n  htp_port = 2\n', "{file}:3: unknown key 'htp_port' (did you mean 'http_port'?)"),
        ('port = 1\n"colour" = "blue"\n', "{file}:2: unknown key 'colour'"),
        ('port = 1\n[smtp]\nhost = "relay"\n', "{file}:2: unknown key 'smtp' (settings are top-level keys: smtp_host, smtp_port, "
         "smtp_starttls, smtp_user, smtp_password, smtp_from)"),
        ('broker.region = "x"\n', "{file}:1: unknown key 'broker' (settings are top-level keys)"),
        ('# the port\nport = "7480"\n', '{file}:2: port: expected an integer, not "7480"'),
        ('salvage = 1\n', "{file}:1: salvage: expected true or false, not 1"),
        ('history_hours = true\n', "{file}:1: history_hours: expected a number, not true"),
        ('access_key = "A:a"\n', '{file}:1: access_key: expected a list of strings, not "A:a"'),
        ('sync = "fast"\n', "{file}:1: sync: expected one of full, os, not 'fast'"),
        ('commit_delay_ms = 5000\n', "{file}:1: commit_delay_ms: expected 0 to 1000 milliseconds, not 5000"),
        ('port = \n', "{file}: Invalid value (at line 1, column 8)"),
    ],
)
def test_a_bad_file_is_one_error_naming_the_key_and_its_line(tmp_path, text, message):
    file = tmp_path / "dovecote.toml"
    file.write_text(text)
    with pytest.raises(config.ConfigError) as error:
        resolve("--config", str(file))
    assert str(error.value) == message.format(file=file)


def test_the_commit_window_reaches_serve_from_a_flag():
    assert config.serve_config(resolve().values).commit_delay_ms == 0
    assert config.serve_config(resolve("--commit-delay-ms", "2.5").values).commit_delay_ms == 2.5


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(config.ConfigError, match=f"cannot read the configuration file {tmp_path}/none.toml: No such file"):
        resolve("--config", str(tmp_path / "none.toml"))


def dovecote_config(*argv: str, environ=None) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "dovecote", "config", *argv], capture_output=True, text=True, timeout=60, env=environ
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_config_prints_a_file_that_loads_back_to_the_same_configuration(tmp_path):
    """Each setting is explained, with its default; those at their defaults are commented out."""
    file = tmp_path / "dovecote.toml"
    file.write_text(f'data_dir = "{tmp_path / "data"}"\nsync = "os"\nsmtp_host = "relay.example"\npublic_url = "http://a\\"b"\n')
    environ = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DOVECOTE_HTTP_PORT": "9000"}
    printed = dovecote_config("--config", str(file), "--history-hours", "2", "--unsigned-sqs-envelopes", environ=environ)
    saved = tmp_path / "saved.toml"
    saved.write_text(printed)
    assert set(tomllib.loads(printed)) == {"data_dir", "sync", "smtp_host", "public_url", "http_port", "history_hours", "unsigned_sqs_envelopes"}
    assert resolve("--config", str(saved)).values == resolve(
        "--config", str(file), "--history-hours", "2", "--unsigned-sqs-envelopes", environ={"DOVECOTE_HTTP_PORT": "9000"}
    ).values
    assert 'http_port = 9000  # from $DOVECOTE_HTTP_PORT' in printed and "# default: 7481" in printed
    assert "# port = 7480  # the default" in printed
    for setting in config.SETTINGS:
        assert setting.explanation.split()[0] in printed

    unchanged = tmp_path / "unchanged.toml"
    unchanged.write_text(dovecote_config(environ={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}))
    assert tomllib.loads(unchanged.read_text()) == {}  # nothing set: everything commented out
    assert resolve("--config", str(unchanged)).values == resolve().values


def test_config_never_prints_a_secret(tmp_path):
    file = tmp_path / "dovecote.toml"
    file.write_text('smtp_host = "relay"\nsmtp_password = "file-password"\naccess_key = ["AKIDFILE:file-secret"]\n')
    environ = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DOVECOTE_SMTP_PASSWORD": "env-password"}
    printed = dovecote_config("--config", str(file), "--access-key", "AKIDFLAG:flag-secret", environ=environ)
    for secret in ("file-password", "env-password", "file-secret", "flag-secret"):
        assert secret not in printed
    assert "# smtp_password: set by $DOVECOTE_SMTP_PASSWORD (not shown)" in printed
    assert "# access_key: 1 set by --access-key: AKIDFLAG (secrets not shown)" in printed
    assert "give access_key, smtp_password again" in " ".join(line.lstrip("# ") for line in printed.splitlines())
    assert set(tomllib.loads(printed)) == {"smtp_host"}
    # the password reaches the relay, from the environment over the file
    args = build_parser().parse_args(["serve", "--config", str(file)])
    values = config.resolve(config.flags_given(args), str(file), {"DOVECOTE_SMTP_PASSWORD": "env-password"}).values
    assert config.serve_config(values).smtp.password == "env-password"


# --- keys with permissions ---------------------------------------------------------------------------
KEYS = """
[[key]]
id = "sensor-7"
secret_env = "SENSOR7_SECRET"
statement = [{ Effect = "Allow", Action = "sqs:SendMessage", Resource = "arn:aws:sqs:*:*:readings" }]

[[key]]
id = "reader"
secret_file = "reader.secret"
account = "111122223333"

[[key.statement]]
Effect = "Allow"
Action = ["sqs:ReceiveMessage", "sqs:DeleteMessage"]
Resource = "arn:aws:sqs:us-east-1:000000000000:readings"
Condition = { StringEquals = { "aws:SourceAccount" = "000000000000" } }
"""


def test_keys_come_from_the_file_with_their_secrets_from_a_variable_and_a_file(tmp_path):
    (tmp_path / "reader.secret").write_text("reader-secret\n")
    file = tmp_path / "dovecote.toml"
    file.write_text(KEYS)
    values = resolve("--config", str(file), "--access-key", "root:root-secret").values
    keys = config.read_keys(values["key"], {"SENSOR7_SECRET": "sensor-secret"})
    assert [(k.key_id, k.secret, k.account_id, len(k.permissions.statements)) for k in keys] == [
        ("sensor-7", "sensor-secret", "", 1), ("reader", "reader-secret", "111122223333", 1),
    ]
    assert values["key"][1].secret_file == str(tmp_path / "reader.secret")  # relative to the file's directory


@pytest.mark.parametrize(
    "text, message",
    [
        ('[[key]]\nid = "k"\n', "{file}:1: key: key k: give secret_file or secret_env (the secret itself is never written here)"),
        ('[[key]]\nid = "k"\nsecret = "s"\n', "{file}:1: key: unknown field 'secret' (a key has id, secret_file, secret_env, account, statement)"),
        ('[[key]]\nid = "k"\nsecret_env = "A"\nsecret_file = "f"\n', "{file}:1: key: key k: give secret_file or secret_env"),
        ('[[key]]\nid = "has:colon"\nsecret_env = "A"\n', "{file}:1: key: id must be 1 to 128 letters, digits or _.+=@-"),
        ('[[key]]\nid = "k"\nsecret_env = "A"\naccount = "12"\n', "{file}:1: key: key k: account must be a 12-digit account id"),
        ('port = 1\n\n[[key]]\nid = "a"\nsecret_env = "A"\n\n[[key]]\nid = "b"\nsecret_env = "B"\n'
         '[[key.statement]]\nEffect = "Maybe"\nAction = "sqs:*"\nResource = "*"\n',
         "{file}:7: key: key b: statement 1: Effect must be Allow or Deny, not \"Maybe\""),
        ('[[key]]\nid = "a"\nsecret_env = "A"\n[[key]]\nid = "a"\nsecret_env = "B"\n', "{file}:4: key: key a is given twice"),
        ('key = "sensor"\n', "{file}:1: key: each key is a table ([[key]]) with an id, and secret_file or secret_env"),
    ],
)
def test_a_bad_key_is_one_error_naming_its_table(tmp_path, text, message):
    file = tmp_path / "dovecote.toml"
    file.write_text(text)
    with pytest.raises(config.ConfigError) as error:
        resolve("--config", str(file))
    assert str(error.value).startswith(message.format(file=file))


def test_a_keys_secret_that_cannot_be_had_is_named_when_serve_starts(tmp_path):
    file = tmp_path / "dovecote.toml"
    file.write_text(KEYS)
    specs = resolve("--config", str(file)).values["key"]
    with pytest.raises(config.ConfigError, match=r"key sensor-7: the variable \$SENSOR7_SECRET that holds its secret is not set"):
        config.read_keys(specs, {})
    with pytest.raises(config.ConfigError, match=f"key reader: cannot read its secret file {tmp_path}/reader.secret: No such file"):
        config.read_keys(specs, {"SENSOR7_SECRET": "s"})
    (tmp_path / "reader.secret").write_text("\n")
    with pytest.raises(config.ConfigError, match="key reader: its secret file .* is empty"):
        config.read_keys(specs, {"SENSOR7_SECRET": "s"})
    result = subprocess.run(
        [sys.executable, "-m", "dovecote", "serve", "--data-dir", str(tmp_path / "data"), "--config", str(file)],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 2 and "SENSOR7_SECRET" in result.stderr and not (tmp_path / "data").exists()


def test_a_key_id_given_as_access_key_and_as_a_table_is_refused(tmp_path):
    file = tmp_path / "dovecote.toml"
    file.write_text(KEYS)
    values = resolve("--config", str(file), "--access-key", "sensor-7:other").values
    with pytest.raises(config.ConfigError, match="sensor-7 is given both as --access-key and as a \\[\\[key\\]\\]"):
        config.serve_config(values)


def test_config_prints_the_keys_without_their_secrets_and_loads_back(tmp_path):
    (tmp_path / "reader.secret").write_text("reader-secret")
    file = tmp_path / "dovecote.toml"
    file.write_text(KEYS)
    environ = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SENSOR7_SECRET": "sensor-secret"}
    printed = dovecote_config("--config", str(file), environ=environ)
    assert "sensor-secret" not in printed and "reader-secret" not in printed
    assert 'secret_env = "SENSOR7_SECRET"' in printed and f'secret_file = "{tmp_path}/reader.secret"' in printed
    saved = tmp_path / "elsewhere" / "saved.toml"
    saved.parent.mkdir()
    saved.write_text(printed)
    assert tomllib.loads(printed)["key"] == [
        {"id": "sensor-7", "secret_env": "SENSOR7_SECRET",
         "statement": [{"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": "arn:aws:sqs:*:*:readings"}]},
        {"id": "reader", "secret_file": f"{tmp_path}/reader.secret", "account": "111122223333",
         "statement": [{"Effect": "Allow", "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage"],
                        "Resource": "arn:aws:sqs:us-east-1:000000000000:readings",
                        "Condition": {"StringEquals": {"aws:SourceAccount": "000000000000"}}}]},
    ]
    loaded = resolve("--config", str(saved)).values["key"]
    assert [spec[:5] for spec in loaded] == [spec[:5] for spec in resolve("--config", str(file)).values["key"]]


SHOVELS = """
[remote.cloud]
endpoint_url = "https://sqs.eu-west-1.amazonaws.com"
region = "eu-west-1"
access_key_id = "AKIDCLOUD"
secret_access_key_env = "CLOUD_SECRET"

[remote.other]
endpoint_url = "http://127.0.0.1:9324"
region = "us-east-1"
access_key_id = "AKIDOTHER"
secret_access_key_file = "other.secret"
verify = false

[[shovel]]
name = "telemetry-up"
from = "telemetry"
to = "cloud:https://sqs.eu-west-1.amazonaws.com/123456789012/telemetry"
max_rate = 200

[[shovel]]
name = "commands-down"
from = "other:http://127.0.0.1:9324/000000000000/device-7-commands"
to = "commands"
"""


def test_remotes_and_shovels_come_from_the_file_with_secrets_from_a_variable_and_a_file(tmp_path):
    (tmp_path / "other.secret").write_text("other-secret\n")
    file = tmp_path / "dovecote.toml"
    file.write_text(SHOVELS)
    values = resolve("--config", str(file)).values
    remotes = config.read_secrets(values["remote"], {"CLOUD_SECRET": "cloud-secret"})
    assert [(r.name, r.access_key_id, r.secret_access_key, r.verify) for r in remotes] == [
        ("cloud", "AKIDCLOUD", "cloud-secret", True), ("other", "AKIDOTHER", "other-secret", False),
    ]
    assert [(s.name, s.source, s.destination, s.max_rate) for s in values["shovel"]] == [
        ("telemetry-up", "telemetry", "cloud:https://sqs.eu-west-1.amazonaws.com/123456789012/telemetry", 200.0),
        ("commands-down", "other:http://127.0.0.1:9324/000000000000/device-7-commands", "commands", 0.0),
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ('[remote.cloud]\nregion = "r"\n', "{file}:1: remote cloud: endpoint_url must be given, as a non-empty string"),
        ('[remote.cloud]\nendpoint_url = "sqs.example"\nregion = "r"\naccess_key_id = "a"\nsecret_access_key_env = "S"\n',
         "{file}:1: remote cloud: endpoint_url must be an http:// or https:// URL, not 'sqs.example'"),
        ('[remote.cloud]\nendpoint_url = "https://h"\nregion = "r"\naccess_key_id = "a"\nsecret_access_key = "s"\n',
         "{file}:1: remote cloud: unknown field 'secret_access_key'"),
        ('[[shovel]]\nname = "x"\nfrom = "a"\n', "{file}:1: shovel: to must be given"),
        ('[[shovel]]\nname = "x"\nfrom = "a"\nto = "b"\nbatch_size = "ten"\n', "{file}:1: shovel: Expected `int`, got `str` - at `batch_size`"),
        ('port = 1\n[[shovel]]\nname = "x"\nfrom = "a"\nto = "b"\nspeed = 3\n', "{file}:2: shovel: Object contains unknown field `speed`"),
    ],
)
def test_a_bad_remote_or_shovel_is_one_error_naming_its_table(tmp_path, text, message):
    file = tmp_path / "dovecote.toml"
    file.write_text(text)
    with pytest.raises(config.ConfigError) as error:
        resolve("--config", str(file))
    assert str(error.value).startswith(message.format(file=file))


@pytest.mark.parametrize("change, says", [
    (("to = \"cloud:", "to = \"nowhere:"), "shovel 'telemetry-up': 'nowhere:https://sqs.eu-west-1.amazonaws.com/123456789012/telemetry' "
                                           "names the remote 'nowhere', which is not a [remote.NAME] table (cloud, other)"),
    (("/123456789012/telemetry\"", "/telemetry\""), "is not an SQS queue URL"),
])
def test_a_shovel_naming_an_unknown_remote_or_a_url_that_is_not_a_queue_stops_serve_with_one_line(tmp_path, change, says):
    (tmp_path / "other.secret").write_text("other-secret\n")
    file = tmp_path / "dovecote.toml"
    file.write_text(SHOVELS.replace(*change))
    result = subprocess.run(
        [sys.executable, "-m", "dovecote", "serve", "--data-dir", str(tmp_path / "data"), "--config", str(file)],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CLOUD_SECRET": "s"},
    )
    assert result.returncode == 2 and says in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "data").exists()


def test_config_prints_remotes_and_shovels_without_secrets_and_they_load_back(tmp_path):
    (tmp_path / "other.secret").write_text("other-secret")
    file = tmp_path / "dovecote.toml"
    file.write_text(SHOVELS)
    printed = dovecote_config("--config", str(file), environ={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CLOUD_SECRET": "c-secret"})
    assert "c-secret" not in printed and "other-secret" not in printed
    saved = tmp_path / "saved.toml"
    saved.write_text(printed)
    again = resolve("--config", str(saved)).values
    first = resolve("--config", str(file)).values
    assert again["shovel"] == first["shovel"] and again["remote"] == first["remote"]


def test_the_mobile_sink_is_a_webhook_or_a_command_from_any_source(tmp_path):
    file = tmp_path / "dovecote.toml"
    file.write_text('mobile_sink_url = "https://gateway.example/sms"\n')
    assert config.serve_config(resolve("--config", str(file)).values).mobile_sink == MobileSink(url="https://gateway.example/sms")
    values = resolve(environ={"DOVECOTE_MOBILE_SINK_COMMAND": "/usr/local/bin/send-sms --quiet"}).values
    assert config.serve_config(values).mobile_sink == MobileSink(command="/usr/local/bin/send-sms --quiet")
    assert config.serve_config(resolve().values).mobile_sink is None


@pytest.mark.parametrize(
    "argv, message",
    [
        (("--mobile-sink-url", "http://a/x", "--mobile-sink-command", "send"), "mobile_sink_url and mobile_sink_command are both set"),
        (("--mobile-sink-url", "gateway:80"), "mobile_sink_url must be an http:// or https:// URL, not 'gateway:80'"),
        (("--mobile-sink-command", "send 'unclosed"), "mobile_sink_command cannot be split into a command line: No closing quotation"),
    ],
)
def test_a_bad_mobile_sink_is_one_error_naming_the_setting(argv, message):
    with pytest.raises(config.ConfigError, match=message):
        config.serve_config(resolve(*argv).values)


def test_a_remotes_secret_that_cannot_be_had_is_named_as_a_keys_is(tmp_path):
    file = tmp_path / "dovecote.toml"
    file.write_text(SHOVELS)
    specs = resolve("--config", str(file)).values["remote"]
    with pytest.raises(ValueError, match=r"remote cloud: the variable \$CLOUD_SECRET that holds its secret is not set"):
        config.read_secrets(specs, {})
    with pytest.raises(ValueError, match=f"remote other: cannot read its secret file {tmp_path}/other.secret: No such file"):
        config.read_secrets(specs, {"CLOUD_SECRET": "s"})
    (tmp_path / "other.secret").write_text("\n")
    with pytest.raises(ValueError, match="remote other: its secret file .* is empty"):
        config.read_secrets(specs, {"CLOUD_SECRET": "s"})


def test_how_functions_run_is_set_by_flag_file_or_variable_and_checked():
    assert config.serve_config(resolve().values).functions == FunctionSettings()
    given = config.serve_config(resolve("--function-python", "/usr/bin/python3.12", "--function-max-instances", "2").values).functions
    assert (given.python, given.max_instances) == ("/usr/bin/python3.12", 2)
    from_environment = config.serve_config(resolve(environ={"DOVECOTE_FUNCTION_MAX_INSTANCES": "8"}).values).functions
    assert from_environment.max_instances == 8
    with pytest.raises(config.ConfigError) as error:
        config.serve_config(resolve("--function-max-instances", "0").values)
    assert str(error.value) == "function_max_instances must be 1 to 1000, not 0"
    with pytest.raises(config.ConfigError) as error:
        config.serve_config(resolve("--function-max-waiting-bytes", "0").values)
    assert str(error.value) == "function_max_waiting_bytes must be more than 0, not 0"
