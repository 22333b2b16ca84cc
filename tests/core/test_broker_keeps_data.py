"""Issue 13 #5: `kafka down` keeps the data and `kafka up` brings it back on the same port; `kafka purge` deletes it."""

from __future__ import annotations

import uuid

from core import broker as launcher
from tests.kafkatools import read_to_end


def test_down_then_up_keeps_topics_data_and_port_and_purge_deletes_them():
    from kafka import KafkaAdminClient, KafkaProducer

    name = f"pytest-keep-{uuid.uuid4().hex[:6]}"
    try:
        b = launcher.start(name, quiet=True)
        p = KafkaProducer(bootstrap_servers=b.bootstrap)
        p.send("kept", b"still here").get(timeout=30)
        p.close()
        assert launcher.stop(name) and launcher.status(name) is None
        again = launcher.start(name, quiet=True)
        assert again.bootstrap == b.bootstrap  # same port: running clients reconnect by themselves
        assert [r.value for r in read_to_end(again.bootstrap, "kept")] == [b"still here"]
        run = launcher.purge(name)
        assert run is not None and not run.exists() and launcher.status(name) is None
        fresh = launcher.start(name, quiet=True)
        admin = KafkaAdminClient(bootstrap_servers=fresh.bootstrap)
        try:
            assert "kept" not in admin.list_topics()
        finally:
            admin.close()
    finally:
        launcher.purge(name)
