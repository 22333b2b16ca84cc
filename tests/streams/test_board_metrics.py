"""``kubesight board`` serves /metrics, /health and /ready on web_port (a self-metrics audit: with KUBESIGHT_WEB_PORT
set nothing listened, and the board's own port answered 404 on /metrics and /ready): ready once it has read its
topics, its figures read from the board as it runs (a page connected is counted)."""

from __future__ import annotations

import urllib.request

import pytest

from core.broker import free_port
from tests.realtools import wait_for
from tests.streams.test_remediation_metrics import _get, _sample, kubesight


@pytest.mark.kafka
def test_kubesight_board_serves_metrics_and_turns_ready_once_it_read_its_topics(kafka_bootstrap):
    page = free_port()
    with kubesight(kafka_bootstrap, "board", f"--listen=127.0.0.1:{page}") as port:
        code, body = _get(port, "/ready")
        assert code == 200 and '"topics":{"ok":true' in body and '"broker":{"ok":true' in body
        assert _get(port, "/health")[0] == 200
        assert _sample(port, "kubesight_board_caught_up") == 1
        assert _sample(port, "kubesight_board_clients") == 0
        with urllib.request.urlopen(f"http://127.0.0.1:{page}/api/events", timeout=10) as stream:
            assert stream.read(5) == b"retry"  # the page's event stream is open
            wait_for(lambda: _sample(port, "kubesight_board_clients") == 1, 10, "a connected page counted")
            wait_for(lambda: (_sample(port, "kubesight_board_summary_bytes") or 0) > 0, 10, "a summary pushed")
