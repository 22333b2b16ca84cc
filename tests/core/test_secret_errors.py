"""Config errors name the slot, never the value, when the value may be a secret typed into the wrong slot: the
password where its file's path or its variable's name belongs, a URL in ``url_file``, an auth block written as
a string.  The same text reaches ``routes check``, the ``silences serve`` reload's 500 and the worker's log."""

from __future__ import annotations

import pytest

from alerts.config import load_text
from core.kafkaclient import KafkaSecurityError, password
from core.settings import KafkaSecurity
from core.yamlconfig import ConfigError

ROUTE = "route: {receiver: r}\nreceivers:\n  - name: r\n"


def _errors(text: str) -> str:
    with pytest.raises(ConfigError) as err:
        load_text(ROUTE + text, "routing.yaml")
    return str(err.value)


def test_a_secret_pasted_into_a_file_slot_is_not_quoted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    got = _errors("    webhook_configs:\n      - url_file: https://hooks.example.com/T0/B0/PASTEDsecret1\n"
                  "    email_configs:\n      - {to: a@b.c, from: k@b.c, smarthost: 'h:25', auth_username: u,\n"
                  "         auth_password_file: hunter2-PASTED-PW}\n")
    assert "PASTEDsecret1" not in got and "hunter2" not in got
    assert (f"routing.yaml:5: receivers[0].webhook_configs[0].url_file: cannot read the file named there "
            f"(relative to the working directory, {tmp_path}): No such file or directory") in got
    assert "receivers[0].email_configs[0].auth_password_file: cannot read the file named there" in got


def test_a_file_slot_that_is_no_secret_still_names_its_file():
    got = _errors("    webhook_configs:\n      - url: http://h/x\n"
                  "        http_config: {tls_config: {ca_file: /nonexistent/ca.pem}}\n")
    assert "tls_config.ca_file: cannot read /nonexistent/ca.pem: No such file or directory" in got


@pytest.mark.parametrize("block", ['authorization: "Bearer AUTHZsecret2"', 'basic_auth: "alice:BASICsecret3"',
                                   'oauth2: "id:OAUTHsecret4"'])
def test_a_credential_block_written_as_a_string_is_not_quoted(block):
    got = _errors(f"    webhook_configs:\n      - url: http://h/x\n        http_config: {{{block}}}\n")
    key = block.split(":")[0]
    assert f"http_config.{key}: expected a mapping, got a value not shown (a secret slot)" in got
    assert "secret" not in got.replace("a secret slot", "")


def test_sigv4_written_as_a_string_is_not_quoted():
    got = _errors("    sns_configs:\n      - {topic_arn: 'arn:aws:sns:us-east-1:1:t', sigv4: 'AKIA:SIGV4secret5'}\n")
    assert "sns_configs[0].sigv4: expected a mapping, got a value not shown (a secret slot)" in got
    assert "SIGV4secret5" not in got


def test_a_url_file_that_holds_no_url_is_refused_at_load_without_quoting_it(tmp_path):
    """Else every notification was retried as a connection error until the retry budget (hours) was spent."""
    bad, good = tmp_path / "bad", tmp_path / "good"
    bad.write_text("hooks.example.com/services/T0/B0/FILEsecret6\n")
    good.write_text("https://hooks.example.com/services/T0/B0/FILEsecret7\n")
    got = _errors(f"    webhook_configs:\n      - url_file: {bad}\n      - url_file: {good}\n"
                  f"    slack_configs: [{{api_url_file: {bad}, channel: x}}]\n")
    assert got.splitlines() == [
        "routing.yaml:5: receivers[0].webhook_configs[0].url_file: the file's content (not shown: a secret) must "
        "be an http:// or https:// URL",
        "routing.yaml:7: receivers[0].slack_configs[0].api_url_file: the file's content (not shown: a secret) must "
        "be an http:// or https:// URL"]
    load_text(ROUTE + f"    webhook_configs:\n      - url_file: {bad}\n", files=False)  # the file alone: not read


def test_kafka_password_slots_are_named_not_quoted(tmp_path, monkeypatch):
    monkeypatch.delenv("Hunter2-PastedKafkaPw", raising=False)
    sec = KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", username="u",
                        password_env="Hunter2-PastedKafkaPw")
    with pytest.raises(KafkaSecurityError) as err:
        password(sec)
    assert str(err.value) == "kafka_security.password_env: the environment variable named there is not set"
    sec = KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", username="u",
                        password_file="Hunter2-PastedKafkaPw")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(KafkaSecurityError) as err:
        password(sec)
    assert str(err.value) == ("kafka_security.password_file: cannot read the file named there: "
                              "No such file or directory")
