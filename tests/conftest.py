"""Shared fixtures: one real Kafka broker per test session, fresh topics per test.

Nothing is skipped: if the broker cannot start, every test that needs it errors loudly.
Set KUBESIGHT_KAFKA to run against an existing cluster instead.
"""

from __future__ import annotations

import gzip
import os
import uuid
from pathlib import Path

import pytest

from core.settings import Settings
from core.topics import ensure_topics

REPO = Path(__file__).resolve().parent.parent
# the recorded inputs the tests read, vendored (files over 8 KB gzip-compressed): see tests/data/README.md
VENDORED = (REPO / "tests" / "data", REPO / "deploy" / "demo" / "recordings")


def unpack_vendored(dest: Path) -> Path:
    """The vendored data as one plain tree at ``dest``, laid out like the shared data folder."""
    for root in VENDORED:
        for src in root.rglob("*"):
            if not src.is_file() or src.parent == root and src.name == "README.md":
                continue
            rel = src.relative_to(root)
            out = dest / (rel.with_suffix("") if src.suffix == ".gz" else rel)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(gzip.decompress(src.read_bytes()) if src.suffix == ".gz" else src.read_bytes())
    return dest


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """The repo's own copy of the recorded data (never ../shared/data nor $KUBESIGHT_DATA)."""
    return unpack_vendored(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def amtemplate():
    """Alertmanager's template package (alerts.gotemplate's helper), built once if ``make amtemplate`` has not."""
    from alerts import gotemplate

    return gotemplate.build(quiet=True)


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
