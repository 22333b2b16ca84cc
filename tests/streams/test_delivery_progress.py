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
