"""Delivery's per-partition progress (streams.alerting.Progress) while one notification is retried for hours."""

from __future__ import annotations

from streams.alerting import Progress


def test_one_notification_retried_for_hours_does_not_hold_every_later_record_in_memory():
    """The receiver's queue held one entry per record after the stuck one (an audit: 1M entries, 107 MiB, 0.4 s per
    commit every 0.2 s). Done records behind it are merged into runs at each commit: the queue follows the
    alternations of pending and done, and the commit point and its metadata are what they were."""
    p = Progress(0, "")
    stuck = p.seen("ops", 0)
    other = None
    for offset in range(1, 100_001):
        entry = p.seen("ops", offset)
        if offset == 70_000:
            other = entry  # a second one still on its way
        else:
            p.mark(entry)
        if offset % 1000 == 0:
            p.commit_point()  # as every 0.2 s
    first, meta = p.commit_point()
    assert len(p.seq["ops"]) == 4  # stuck, 69,999 done, the one on its way, 30,000 done
    assert (first, meta) == (0, '{"ops":[0,[1,69999,1,30000]]}')
    assert p.pending == 2
    p.mark(stuck)
    assert p.commit_point() == (70_000, '{"ops":[70000,[1,30000]]}')
    p.mark(other)
    assert p.commit_point() == (100_001, "") and len(p.seq["ops"]) == 0
    # what a restarted worker reads back from that metadata: the done ones are skipped, the pending one sent
    q = Progress(0, '{"ops":[0,[1,69999,1,30000]]}')
    again = [offset for offset in range(100_001) if q.seen("ops", offset) is not True]
    assert again == [0, 70_000]


def test_progress_restored_from_a_commit_stays_runs_and_says_what_the_flags_said():
    """A restart behind one stuck notification expanded the commit's runs to a flag per record (1M entries) and built
    a tuple per flag at every commit. The runs are kept as runs; what each record is (done or not) and the metadata
    of later commits are those of the flags, checked against a flag-per-record model on random runs."""
    import random

    import orjson

    q = Progress(0, '{"ops":[0,[1,999999]]}')
    assert q.skip["ops"][1] == [1, 999999]  # not a million flags
    rng = random.Random(7)
    for _ in range(200):
        runs = [rng.randint(0, 4) for _ in range(rng.randint(1, 8))]
        start = rng.randint(0, 5)
        p = Progress(start, orjson.dumps({"r": [start, runs]}).decode())  # committed at start
        flags = [i % 2 == 1 for i, n in enumerate(runs) for _ in range(n)]
        n = rng.randint(0, len(flags) + 3)
        got = [p.seen("r", start + i) is True for i in range(n)]
        assert got == [i < len(flags) and flags[i] for i in range(n)], (runs, n)
        # what is left of them is what the next commit says (records seen and not done make it start earlier)
        first, meta = p.commit_point()
        pending = [start + i for i in range(n) if not got[i]]
        assert first == (pending[0] if pending else start + n), (runs, n, first)
        # a worker restarted from that commit skips exactly what was done, seen or not yet
        again = Progress(first, meta)
        total = max(len(flags), n) + 2
        redo = [again.seen("r", o) is True for o in range(first, start + total)]
        want = [(not (o - start < n and not got[o - start])) and (o - start < n or (o - start < len(flags)
                                                                                   and flags[o - start]))
                for o in range(first, start + total)]
        assert redo == want, (runs, n, meta)
