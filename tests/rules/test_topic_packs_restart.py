"""Packs received on the rules topic are rebuilt from the topic at every start (streams.stages.RulePacks)."""

from __future__ import annotations

from core.settings import Settings
from streams.stages import RulePacks

PACK = """apiVersion: kubesight.io/v1
kind: RulePack
metadata: {{name: {name}, version: "1", description: restart test}}
rules:
  - alert: {alert}
    match: {{source: k8s, reason: BackOff}}
    condition: {{type: event_count, count: 1, window: 10m}}
"""


def test_a_pack_the_last_run_left_in_the_topic_folder_is_not_loaded_at_start(tmp_path):
    """The folder of topic packs outlives a restart (state_dir, worker id per pod). A pack since moved into a settings
    file was a duplicate name, fatal at start (the worker crash-looped); one since tombstoned, with the tombstone
    compacted away, came back for good. The folder is emptied at start; the topic's replay writes it again."""
    moved = tmp_path / "team-x.yaml"
    moved.write_text(PACK.format(name="team-x", alert="TeamXDown"))
    topic_dir = tmp_path / "rules-topic"
    topic_dir.mkdir()
    (topic_dir / "team-x.yaml").write_text(PACK.format(name="team-x", alert="TeamXDown"))
    (topic_dir / "gone.yaml").write_text(PACK.format(name="gone", alert="GoneRule"))
    s = Settings(default_pack=False, rules=[str(moved)])
    packs = RulePacks(s, topic_dir=topic_dir)  # raised ConfigError: duplicate pack name "team-x"
    assert [r.alert for r in packs.holder.engine.ruleset.rules] == ["TeamXDown"]
    assert list(topic_dir.glob("*.yaml")) == []
    # what the topic still holds comes back through its replay
    assert packs.apply_topic_record(b"other", PACK.format(name="other", alert="OtherRule").encode()) == []
    assert sorted(r.alert for r in packs.holder.engine.ruleset.rules) == ["OtherRule", "TeamXDown"]
