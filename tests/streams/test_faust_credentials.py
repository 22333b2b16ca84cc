"""The Faust app's broker credentials: ``core.kafkaclient.client_config``'s "faust" flavour gives plain values (the
base layer knows no Faust) and ``streams.app.client_config`` makes them Faust's own, as Faust's aiokafka driver
reads them (``credentials_to_aiokafka_auth``)."""

from __future__ import annotations

import faust.auth
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from core.kafkaclient import Bootstrap, Credentials, client_config
from core.settings import KafkaSecurity
from streams import app


def test_each_protocol_becomes_fausts_credentials(monkeypatch):
    monkeypatch.setenv("KS_TEST_FAUST_PW", "pw-SECRET")
    sasl = dict(sasl_mechanism="SCRAM-SHA-512", username="alice", password_env="KS_TEST_FAUST_PW")
    cases = {p: Bootstrap("k1:9093,k2:9093", KafkaSecurity(protocol=p, **(sasl if p.startswith("SASL") else {})))
             for p in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")}
    plain = {p: client_config(b, "faust") for p, b in cases.items()}
    assert all(isinstance(c.get("broker_credentials"), Credentials) for p, c in plain.items() if p != "PLAINTEXT")
    assert "pw-SECRET" not in repr(plain["SASL_SSL"])
    made = {p: app.client_config(b) for p, b in cases.items()}
    assert {c["broker"] for c in made.values()} == {"kafka://k1:9093;kafka://k2:9093"}
    assert "broker_credentials" not in made["PLAINTEXT"]
    assert isinstance(made["SSL"]["broker_credentials"], faust.auth.SSLCredentials)
    auth = {p: credentials_to_aiokafka_auth(c["broker_credentials"]) for p, c in made.items() if p != "PLAINTEXT"}
    assert auth["SSL"]["security_protocol"] == "SSL" and auth["SSL"]["ssl_context"] is not None
    for p in ("SASL_PLAINTEXT", "SASL_SSL"):
        assert isinstance(made[p]["broker_credentials"], faust.auth.SASLCredentials)
        got = auth[p]
        assert (got["security_protocol"], got["sasl_mechanism"], got["sasl_plain_username"],
                got["sasl_plain_password"]) == (p, "SCRAM-SHA-512", "alice", "pw-SECRET")
        assert (got["ssl_context"] is None) == (p == "SASL_PLAINTEXT")
