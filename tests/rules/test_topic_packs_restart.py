"""Packs received on the rules topic across a restart of the worker (streams.stages.RulePacks)."""

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


def _rules(packs: RulePacks) -> list[str]:
    return sorted(r.alert for r in packs.holder.engine.ruleset.rules)


def test_the_last_runs_topic_packs_are_in_force_from_the_start_and_those_the_topic_lost_go_once_it_is_read(tmp_path):
    """The folder of topic packs outlives a restart (state_dir, a worker id per pod). Its packs are in force from the
    first record (emptied at start, the hot path ran without them until the topic was read again, and a tick resolved
    their alerts); one tombstoned since, the tombstone compacted away, is dropped once the topic was read to its end
    (it came back for good)."""
    topic_dir = tmp_path / "rules-topic"
    topic_dir.mkdir()
    (topic_dir / "kept.yaml").write_text(PACK.format(name="kept", alert="KeptRule"))
    (topic_dir / "gone.yaml").write_text(PACK.format(name="gone", alert="GoneRule"))
    packs = RulePacks(Settings(default_pack=False), topic_dir=topic_dir)
    assert _rules(packs) == ["GoneRule", "KeptRule"]
    assert packs.apply_topic_record(b"kept", PACK.format(name="kept", alert="KeptRule").encode()) == []  # replay
    assert packs.forget_unreplayed() == []  # caught up
    assert _rules(packs) == ["KeptRule"] and [f.name for f in topic_dir.glob("*.yaml")] == ["kept.yaml"]


def test_a_topic_pack_the_settings_packs_now_refuse_is_left_out_at_start_not_fatal(tmp_path):
    """A pack moved from the topic into a settings file: its old topic copy was a duplicate name, fatal at start,
    and the worker crash-looped. The topic's packs are left out until the topic is read again."""
    moved = tmp_path / "team-x.yaml"
    moved.write_text(PACK.format(name="team-x", alert="TeamXDown"))
    topic_dir = tmp_path / "rules-topic"
    topic_dir.mkdir()
    (topic_dir / "team-x.yaml").write_text(PACK.format(name="team-x", alert="TeamXDown"))
    packs = RulePacks(Settings(default_pack=False, rules=[str(moved)]), topic_dir=topic_dir)
    assert _rules(packs) == ["TeamXDown"] and list(topic_dir.glob("*.yaml")) == []
    # the topic still holds it (not tombstoned yet): refused again, the running set stays
    errors = packs.apply_topic_record(b"team-x", PACK.format(name="team-x", alert="TeamXDown").encode())
    assert errors and "duplicate pack name" in errors[0] and _rules(packs) == ["TeamXDown"]
