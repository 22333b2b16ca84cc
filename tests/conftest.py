"""Shared fixtures: one real Kafka broker per test session, fresh topics per test.

Nothing is skipped: if the broker cannot start, every test that needs it errors loudly.
Set KUBESIGHT_KAFKA to run against an existing cluster instead.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from core.settings import Settings
from core.topics import ensure_topics

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("KUBESIGHT_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    assert DATA.is_dir(), f"shared data folder not found at {DATA} (set KUBESIGHT_DATA)"
    return DATA


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    external = os.environ.get("KUBESIGHT_KAFKA")
    if external:
        yield external
        return
    from core import broker as launcher

    broker = launcher.start(f"pytest-{os.getpid()}", attach=True, quiet=True)
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def settings(kafka_bootstrap) -> Settings:
    """Settings with a unique topic prefix and app id, topics created, pointing at the test broker."""
    tag = uuid.uuid4().hex[:8]
    s = Settings(kafka=kafka_bootstrap, topic_prefix=f"t{tag}-", app_id=f"ks-{tag}", partitions=4)
    ensure_topics(s, kafka_bootstrap)
    return s
