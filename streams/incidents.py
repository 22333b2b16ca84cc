"""The incident stage on Kafka: alerts re-keyed by cluster, grouped into incidents, published on ``incidents``.

    alerts (by fingerprint) ───┐                                       ┌─> incident-alerts (by cluster)
                               ├─ "incidents" transactional processor ─┤
    incident-alerts (by cluster)┘  state: alerts.incidents per cluster  └─> incidents (by incident id)

Partition *p* of ``alerts`` and of ``incident-alerts`` go to one consumer with one ``Store``
(``streams.hotpath``); an alert read from ``alerts`` is re-emitted onto ``incident-alerts`` keyed
by its cluster, so every alert of one cluster -- every member of one incident -- meets on one
partition, whose state (``alerts.incidents``) lives in ``incidents-changelog``.  Outputs,
changelog and offsets commit in one transaction, and the logic is a deterministic function of the
records and their event time: a restarted worker publishes the same records as one that never
stopped.  Quiet periods end on the partition's event-time watermark (``tick``).

Notification per incident (routes with ``incidents: true``, ``alerts.routing``): the alerting stage
calls ``hand_off`` for each notification it flushes; a notification of such a route does not go to
``notifications`` but its alerts go onto ``incident-alerts`` (keyed by cluster, like the re-keyed
copies) with the receiver they were meant for (``NOTIFY``).  This stage records the receiver on the
incident's member and writes the incident's notifications (``alerts.incidents``: the cause's owner
gets the incident, every other receiver one notice) onto ``notifications``, in the same transaction
as its state: the delivery lanes send them like any other.
"""

from __future__ import annotations

import orjson

from alerts.incidents import Incidents
from core.records import Alert, encode, from_dict
from core.settings import Settings
from streams.hotpath import TransactionalProcessor

REKEYED = "kubesight.io/incident-rekeyed"  # reserved annotation: this copy is on incident-alerts
NOTIFY = "kubesight.io/incident-notify"  # reserved annotation: handed over by alerting, meant for this receiver
CLOCK = "__incidents_clock__"  # the event time of the re-keyed stream alone (the partition's watermark also
# counts the not yet re-keyed alerts, which would end a quiet period before the resolutions arrive)


class IncidentStage:
    """alerts -> incident-alerts (re-keyed by cluster); incident-alerts -> incidents."""

    def __init__(self, incidents: Incidents | None = None, wall: bool = False):
        self.incidents = incidents or Incidents()
        self.wall = wall  # clock "wall": quiet periods also end on the wall clock (live clusters)

    def process(self, rec, state, emit) -> None:
        if not isinstance(rec, Alert):
            return
        if REKEYED not in rec.annotations:
            ann = {**rec.annotations, REKEYED: "1"}
            copy = Alert(rec.labels, ann, rec.status, rec.startsAt, rec.endsAt, rec.source, rec.generatorURL)
            emit("incident-alerts", rec.labels.get("cluster", "").encode(), encode(copy))
            return
        ann = {k: v for k, v in rec.annotations.items() if k != REKEYED and k != NOTIFY}
        plain = Alert(rec.labels, ann, rec.status, rec.startsAt, rec.endsAt, rec.source, rec.generatorURL)
        # a firing alert's endsAt is a promise about the future (the Watchdog's, a day for the remediator's), not a
        # time that has come: only a resolution's end moves the clock
        now = max(state.get(CLOCK, 0.0), rec.startsAt, (rec.endsAt or 0.0) if rec.status == "resolved" else 0.0)
        if now != state.get(CLOCK):
            state[CLOCK] = now
        receiver = rec.annotations.get(NOTIFY)
        # what has ended by now ends first: an alert must not join an incident that resolved before it came
        out = self.incidents.expire(state, now)
        out += (self.incidents.handed(plain, receiver, state, now) if receiver
                else self.incidents.observe(plain, state, now))
        self._emit(out, emit)

    def tick(self, now: float, state, emit) -> None:
        events = state.get(CLOCK, 0.0)
        clock = max(events, now) if self.wall else events
        # the wall clock ends quiet periods and holds; the resolutions remembered (``end|``) are forgotten on the
        # event clock they were read at, or a backlog a day old would forget them at the next tick
        self._emit(self.incidents.expire(state, clock, events=events), emit)

    def _emit(self, records, emit) -> None:
        for r in records:
            emit("incidents", r["id"].encode(), orjson.dumps(r))
        for note in self.incidents.take_notes():
            emit("notifications", note["groupKey"].encode(), orjson.dumps(note))


def hand_off(note: dict, router, emit) -> None:
    """Where the alerting stage's notification goes: ``notifications``, or, when its route notifies per incident
    (``incidents: true``), its alerts to the incident stage (``incident-alerts``, by cluster, with the receiver)."""
    if not router.per_incident(note["groupKey"]):
        emit("notifications", note["groupKey"].encode(), orjson.dumps(note))
        return
    for d in note["alerts"]:
        a = from_dict(d)
        ann = {**a.annotations, REKEYED: "1", NOTIFY: note["receiver"]}
        emit("incident-alerts", a.labels.get("cluster", "").encode(),
             encode(Alert(a.labels, ann, a.status, a.startsAt, a.endsAt, a.source, a.generatorURL)))


def incident_processor(settings: Settings, bootstrap: str, *, worker_id: str = "0",
                       incidents: Incidents | None = None, tick_interval: float = 5.0) -> TransactionalProcessor:
    """The worker's incident processor (its own consumer group, transactional id and changelog)."""
    return TransactionalProcessor(settings, bootstrap, "incidents", ["alerts", "incident-alerts"],
                                  IncidentStage(incidents or Incidents(hold=settings.incident_wait), wall=settings.clock == "wall"), worker_id=worker_id, tick_interval=tick_interval,
                                  urgent=("incidents", "notifications"))
