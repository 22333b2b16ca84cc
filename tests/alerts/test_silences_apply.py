"""Silences as code: ``kubesight silences apply FILE`` makes the silences topic hold the set the file lists."""

import asyncio
import time

import pytest

from alerts.silences import Silence, SilenceFile, Silences, load_file, plan, silence_id
from core.records import format_time
from core.yamlconfig import ConfigError
from kubesight.cli import main
from streams.alerting import SilenceBook

FILE = """name: maintenance
silences:
  - id: db-migration
    matchers: ['namespace="shop"', 'alertname=~"KubePod.*"']
    starts: 2026-01-01T00:00:00Z     # unquoted: YAML's timestamp, taken as it is
    ends: '2099-01-01T06:00:00Z'
    comment: DB migration, OPS-123
    created_by: alice
  - id: node-7
    matchers: ['node="node-7"']
    duration: 2h
    comment: replacing a disk
"""


def steps(f, book, now):
    return [(what, s.comment.rsplit("/", 1)[-1].rstrip("]")) for what, s in plan(f, book, now)]


def test_plan_creates_keeps_updates_and_ends_only_the_sets_own_silences(tmp_path):
    path = tmp_path / "silences.yaml"
    path.write_text(FILE)
    f, book, now = load_file(path), Silences(), 1_800_000_000.0
    assert steps(f, book, now) == [("create", "db-migration"), ("create", "node-7")]
    for _, s in plan(f, book, now):
        book.put(s)
    hand = Silence.create({"matchers": [{"name": "node", "value": "node-9"}], "startsAt": "2027-01-01T00:00:00Z",
                           "endsAt": "2099-01-01T00:00:00Z", "createdBy": "bo", "comment": "by hand"}, now)
    other = plan(SilenceFile(name="other", silences=f.silences[1:]), Silences(), now)[0][1]
    book.put(hand)
    book.put(other)
    later = now + 3600
    assert steps(f, book, later) == [("unchanged", "db-migration"), ("unchanged", "node-7")]
    # the duration runs from the first apply, not from each apply
    assert book.by_id[silence_id("maintenance", "node-7")].endsAt == now + 7200
    f2 = SilenceFile.model_validate(
        {"name": "maintenance", "silences": [f.silences[1].model_dump() | {"duration": "3h", "matchers": ['node="node-7"']}]})
    got = plan(f2, book, later)
    assert [(w, s.id) for w, s in got] == [("update", silence_id("maintenance", "node-7")),
                                           ("expire", silence_id("maintenance", "db-migration"))]
    assert got[0][1].endsAt == now + 3 * 3600 and got[0][1].startsAt == now
    # the other set's silence and the one made by hand are not this file's to end
    assert {s.id for _, s in got} & {hand.id, other.id} == set()
    # after its end a silence is in the past: not made again
    assert steps(f2, book, now + 4 * 3600) == [("past", "node-7"), ("expire", "db-migration")]


@pytest.mark.parametrize("text, error", [
    ("name: m\nsilences:\n  - {id: a, matchers: [a=b], comment: c, duration: 1h, ends: '2099-01-01T00:00:00Z'}\n",
     "f.yaml:3: silences[0]: set exactly one of ends and duration"),
    ("name: m\nsilences:\n  - {id: a, matchers: [a=b], comment: c, duration: 1h}\n"
     "  - {id: a, matchers: [c=d], comment: c, duration: 1h}\n",
     "f.yaml:4: silences[1].id: duplicate id 'a' (first at silences[0])"),
    ("name: m\nsilences:\n  - {id: a, matchers: ['a=~\".*\"'], comment: c, duration: 1h}\n",
     "f.yaml:3: silences[0]: matchers would match every alert (at least one must not match an empty label set)"),
    ("name: m\nsilences:\n  - {id: a, matchers: [a=b], comment: c, ends: tomorrow}\n",
     "f.yaml:3: silences[0].ends: invalid time 'tomorrow' (use RFC 3339, e.g. 2026-12-01T22:00:00Z)"),
    ("name: 'a set'\n", "f.yaml:1: name: "),
])
def test_a_bad_file_says_where(tmp_path, text, error):
    (tmp_path / "f.yaml").write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_file(tmp_path / "f.yaml")
    assert exc.value.errors[0].replace(f"{tmp_path}/", "").startswith(error), exc.value.errors


def test_a_silence_ending_past_what_a_time_can_say_refuses_the_set_before_anything_is_written(
        tmp_path, monkeypatch, capsys):
    """``duration: 10000y`` loaded, and the apply wrote the silences before it, then died on the year 12020 with a
    traceback: half the set applied.  Now the file is refused at its line and the topic is never opened."""
    import streams.cli_alerts

    opened = []
    monkeypatch.setattr(streams.cli_alerts, "_book_call", lambda *a: opened.append(a))
    path = tmp_path / "f.yaml"
    path.write_text("name: m\nsilences:\n  - {id: ok, matchers: [a=b], comment: c, duration: 1h}\n"
                    "  - {id: big, matchers: [a=c], comment: c, duration: 10000y}\n"
                    "  - {id: late, matchers: [a=d], comment: c, starts: 9999-06-01T00:00:00Z, duration: 1y}\n")
    assert main(["silences", "apply", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f'{path}:4: silences[1].duration: duration "10000y" is too long (at most 292y24w3d23h47m16s854ms)',
        f"{path}:5: silences[2]: starts + duration ends after the year 9999"]
    assert opened == []
    # the longest duration a file may give still makes a silence every reader can write and read
    f = SilenceFile.model_validate({"name": "m", "silences": [
        {"id": "long", "matchers": ["a=b"], "comment": "c", "duration": "292y"},
        {"id": "last", "matchers": ["a=b"], "comment": "c", "ends": "9999-12-31T23:59:59Z"}]})
    for _, s in plan(f, Silences(), time.time()):
        assert Silence.decode(s.encode()).endsAt == pytest.approx(s.endsAt, abs=0.001)


def test_apply_through_the_topic_and_the_silences_mute(settings, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("KUBESIGHT_KAFKA", settings.kafka)
    monkeypatch.setenv("KUBESIGHT_TOPIC_PREFIX", settings.topic_prefix)
    path = tmp_path / "silences.yaml"
    path.write_text(FILE)
    assert main(["silences", "apply", str(path), "--dry-run"]) == 0
    assert "dry run" in capsys.readouterr().out

    async def mutes(labels):
        book = SilenceBook(settings, settings.kafka)
        await book.start()
        try:
            await asyncio.wait_for(book.caught_up.wait(), 60)
            return book.silences.muting(labels, time.time())
        finally:
            await book.stop()

    node7 = {"alertname": "NodeDown", "node": "node-7"}
    assert asyncio.run(mutes(node7)) == []  # the dry run wrote nothing
    assert main(["silences", "apply", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in out] == [["create", "maintenance/db-migration"], ["create", "maintenance/node-7"]]
    assert asyncio.run(mutes(node7)) == [silence_id("maintenance", "node-7")]
    assert main(["silences", "apply", str(path)]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["unchanged", "unchanged"]
    path.write_text(FILE.split("  - id: node-7")[0])  # node-7 is done: taken out of the file
    assert main(["silences", "apply", str(path)]) == 0
    assert [line.split()[:2] for line in capsys.readouterr().out.splitlines()] == [
        ["unchanged", "maintenance/db-migration"], ["expire", "maintenance/node-7"]]
    assert asyncio.run(mutes(node7)) == []
    assert asyncio.run(mutes({"alertname": "KubePodCrashLooping", "namespace": "shop"})) == [
        silence_id("maintenance", "db-migration")]
    path.write_text("name: maintenance\nsilences: oops\n")
    assert main(["silences", "apply", str(path)]) == 2
    assert f"{path}:2: silences: expected a list" in capsys.readouterr().err


REMIND = """
route:
  receiver: platform
  group_wait: 0s
  group_interval: 500ms
  routes:
    - matchers: ['alertname="SilenceStillMuting"']
      receiver: owners
receivers:
  - {{name: platform, webhook_configs: [{{url: "{url}/platform", timeout: 500ms}}]}}
  - {{name: owners, webhook_configs: [{{url: "{url}/owners", send_resolved: true, timeout: 500ms}}]}}
"""


def test_a_forgotten_silence_is_reminded_until_it_ends(settings):
    from alerts.config import load_text
    from core.records import format_time
    from streams.alerting import AlertingService
    from tests.alerts.test_pipeline_kafka import alert, produce, wait_for
    from tests.alerts.webhook_server import ScriptedReceiver

    settings = settings.model_copy(update={"clock": "wall", "silence_reminder_after": 2.0})

    async def go():
        hooks = ScriptedReceiver()
        svc = AlertingService(settings, settings.kafka, load_text(REMIND.format(url=await hooks.start())))
        svc.remind_every = 0.3
        await svc.start()

        def told(path, status):
            return [a for x in hooks.accepted if x["path"] == path for a in x["body"]["alerts"] if a["status"] == status]

        try:
            now = time.time()
            await svc.book.put(Silence.create({
                "matchers": [{"name": "node", "value": "n1"}], "startsAt": format_time(now - 5),
                "endsAt": format_time(now + 3600), "createdBy": "ana", "comment": "disk swap"}, now=now, id="s-n1"))
            await produce(settings, [alert("NodeDown", "n1")])
            await wait_for(lambda: told("/owners", "firing"), "the reminder of the silence that mutes NodeDown")
            (r,) = told("/owners", "firing")
            assert (r["labels"]["silence_id"], r["labels"]["created_by"]) == ("s-n1", "ana")
            assert r["annotations"]["summary"].endswith("still mutes 1 firing alert")
            await svc.book.expire("s-n1")  # the work is done: the silence ends, NodeDown is told, the reminder resolves
            await wait_for(lambda: told("/owners", "resolved"), "the reminder resolved")
            await wait_for(lambda: told("/platform", "firing"), "NodeDown, no longer muted")
        finally:
            await svc.stop()
            await hooks.stop()

    asyncio.run(go())


def test_expired_silences_are_forgotten_after_the_retention_on_the_silences_own_clock():
    """Alertmanager keeps an expired silence 120 h (listed as expired), then drops it: the memory of every reader
    holds the recent silences, not every one ever made. Measured on the silences' own times, so old ones replayed
    stay as they were until newer ones come."""
    from alerts.silences import RETENTION, Silence, Silences

    def made(at: float, hours: float, name: str) -> Silence:
        return Silence.create({"matchers": [{"name": "node", "value": name}], "startsAt": format_time(at),
                               "endsAt": format_time(at + hours * 3600), "createdBy": "t", "comment": "c"}, at)

    book = Silences()
    old, recent, long = made(1000.0, 1, "a"), made(1000.0 + RETENTION, 1, "b"), made(1000.0, 24 * 365, "c")
    for s in (old, recent, long):
        book.put(s)
    assert set(book.by_id) == {old.id, recent.id, long.id}  # old ended 119 h before the latest change: kept
    later = made(1000.0 + RETENTION + 2 * 3600, 1, "d")
    book.put(later)
    assert set(book.by_id) == {recent.id, long.id, later.id}  # old ended more than 120 h ago: forgotten


def test_an_older_version_read_back_from_the_topic_does_not_undo_an_update():
    """A writer holds its new version at once, then reads its earlier record back from the topic: that record is
    older (``updatedAt``) and is not taken, as Alertmanager merges silences from its peers (a GET just after an
    update showed the version before it)."""
    book = Silences()
    body = {"matchers": [{"name": "namespace", "value": "shop", "isRegex": False, "isEqual": True}],
            "startsAt": format_time(1000.0), "endsAt": format_time(9000.0), "createdBy": "a", "comment": "first"}
    first = Silence.create(body, now=1000.0, id="s1")
    second = Silence.create({**body, "comment": "second"}, now=1100.0, id="s1")
    book.put(second)
    book.apply(b"s1", first.encode())
    assert book.by_id["s1"].comment == "second"
    book.apply(b"s1", Silence.create({**body, "comment": "third"}, now=1200.0, id="s1").encode())
    assert book.by_id["s1"].comment == "third"
