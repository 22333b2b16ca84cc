"""Derived signals: counter rates, ratios and histogram quantiles, computed in the stream (a Stage).

Samples arrive keyed by their series, so everything about ONE series is local to the partition
that owns it: the per-second rate of a counter over a window, with counter resets (a drop in
value means the counter restarted from zero, as in PromQL's ``rate``), or the change of a
GPU's last Xid code.  Aggregates ACROSS series -- a sum over every ``apiserver_request_total``
series, a 5xx share by verb, a quantile over histogram buckets that are separate series --
need the contributions of series living on other partitions, so they are re-keyed:

1. where a source series lives, its local result (e.g. its rate) is emitted to the ``samples``
   topic as a *partial* -- a Sample named ``<signal>:partial`` with labels
   ``kubesight="partial"``, ``src`` (the source series) and ``part`` (``le`` bound, ``num``,
   ``den``, ``x``) -- keyed by the DERIVED series key, so every partial of one derived series lands on
   one partition;
2. there, the latest partial of each source (younger than ``staleness``) is kept in the state
   under the derived key, and when the event-time watermark passes the newest partial by
   ``settle`` seconds the aggregate is emitted as the derived Sample (labels carry
   ``kubesight="derived"``), keyed by its own series key -- the same partition, so rules on
   the derived series share it.

The stage ignores its own outputs (``kubesight`` label) so nothing loops.  All state is plain
JSON in the given mapping under ``derived|...`` keys (assigned back on every change), so a
``dict`` serves in tests and the worker's changelogged ``Store`` in production; outputs depend
only on the records and the watermark, so replays give the same signals.

State is bounded per key, whatever the number of series (no record can outgrow Kafka's
message limit): one key per counter series (``derived|c|<hash>``: last value, reset-adjusted
total and at most ``ANCHORS`` window anchors; ``derived|h|<hash>`` for a ``held`` one), one per derived series (``derived|a|<hash>``: its
name and labels, at most ``MAX_CONTRIBUTIONS`` contributions keyed by part and a short hash of
their source series), written when a contribution arrives and not again when it is emitted.
Which derived series are due is an in-memory index per state mapping, rebuilt from those keys the
first time a restored state is seen (see ``_index``); nothing holds a list of every pending series.
Keys of series that went away are dropped by a sweep every ``SWEEP_EVERY`` of event time (``_sweep``): the number
of keys follows the series alive now, not every series ever seen.

Quantiles follow PromQL's ``histogram_quantile`` (linear interpolation within the bucket).  A signal that is
not defined yet (one point of a counter, a histogram with no observations in the window, a
ratio with no requests) is not emitted: silence, never a misleading 0.  Names and
definitions: ``collectors/metrics/DERIVED.md``.

>>> from core.records import Sample, decode
>>> out = []
>>> emit = lambda topic, key, value: out.append((topic, key, decode(value)))
>>> d, state = Derived(), {}
>>> for t, v in [(0, 100), (30, 130), (60, 10)]:  # a restart between 30 and 60
...     d.process(Sample("apiserver_request_total", v, t, {"code": "200", "verb": "GET"}), state, emit)
>>> [(o[2].name, o[2].value) for o in out if o[2].name.startswith("apiserver_request_rate")]
[('apiserver_request_rate:partial', 1.0), ('apiserver_request_rate:partial', 0.6666666666666666)]
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass

from core.records import Sample, encode
from core.statememo import PerState

MARK = "kubesight"  # label on partials ("partial") and derived samples ("derived")
PREFIX = "derived|"
AGG = "derived|a|"
TICKED = "derived|ticked"  # every derived series whose newest partial is at or before this was emitted
SWEPT = "derived|swept"  # the event time of the last sweep (``Derived._sweep``)
SWEEP_EVERY = 600.0  # seconds of event time between sweeps for what series that went away left behind
ANCHORS = 6  # window anchors kept per counter series: the rate's start is at most window/(ANCHORS-1) early
_UNSET = object()
HELD_UNSEEN = 1e9  # a ``held`` series' age before its first change here (finite: partials are JSON)
MAX_CONTRIBUTIONS = 10_000  # source series per derived series (~60 B each): one record stays far below 1 MiB

log = logging.getLogger("kubesight.derived")


def short(series: str) -> str:
    """A 16-hex-digit name for a series in state keys (the series text itself can be 200+ bytes)."""
    return hashlib.blake2b(series.encode(), digest_size=8).hexdigest()


def _http_5xx(label: str) -> Callable[[dict], bool]:
    """Whether the HTTP status in ``label`` is a 5xx (the apiserver calls it ``code``, ingress-nginx ``status``)."""

    def is_5xx(labels: dict) -> bool:
        c = labels.get(label, "")
        return len(c) == 3 and c[0] == "5" and c.isdigit()

    return is_5xx


_is_5xx = _http_5xx("code")


def _not_long_running(labels: dict) -> bool:
    return labels.get("verb") not in ("WATCH", "CONNECT")


def _label_is(name: str, value: str) -> Callable[[dict], bool]:
    return lambda labels: labels.get(name) == value


_PVC_GATES = (("kube_persistentvolumeclaim_access_mode", "gate", _label_is("access_mode", "ReadOnlyMany")),
              ("kube_persistentvolumeclaim_labels", "gate", _label_is("label_excluded_from_alerts", "true")))


# the gRPC codes etcd-mixin counts as failures (a client's Canceled or NotFound is not the server failing)
_GRPC_FAILURES = frozenset(("Unknown", "FailedPrecondition", "ResourceExhausted", "Internal", "Unavailable",
                            "DataLoss", "DeadlineExceeded"))


def _etcd(labels: dict) -> bool:
    return "etcd" in labels.get("job", "")  # other gRPC servers export grpc_server_handled_total too


def _etcd_grpc_failure(labels: dict) -> bool:
    return labels.get("grpc_code") in _GRPC_FAILURES and _etcd(labels)


# kubernetes-mixin's apiserver availability: reads and writes by verb, streaming subresources left out of the latency
# SLI, and how long a request may take before it counts against the budget (reads by scope; writes 1 s)
_READS, _WRITES = frozenset(("LIST", "GET")), frozenset(("POST", "PUT", "PATCH", "DELETE"))
_STREAMING = frozenset(("proxy", "attach", "log", "exec", "portforward"))
_READ_BOUND = {"resource": 1.0, "": 1.0, "namespace": 5.0, "cluster": 30.0}  # scope -> le, a number (le is compared so)


def _verbs(verbs: frozenset, *, failed: bool = False) -> Callable[[dict], bool]:
    if failed:
        return lambda labels: labels.get("verb") in verbs and _is_5xx(labels)
    return lambda labels: labels.get("verb") in verbs


def _sli(verbs: frozenset, le: Callable[[dict], bool] | None = None) -> Callable[[dict], bool]:
    """A series of the latency SLI histogram of these verbs, no streaming subresource; with ``le``, its bucket
    of requests fast enough."""
    def ok(labels: dict) -> bool:
        return (labels.get("verb") in verbs and labels.get("subresource", "") not in _STREAMING
                and (le is None or le(labels)))
    return ok


def _le_num(v) -> float | None:
    """A bucket's ``le`` as a number ("1", "1.0" -- Prometheus 3 writes that -- "1e+00" and "+Inf" alike), None if it
    is not one."""
    if not isinstance(v, str):
        return None
    try:
        return _le(v)
    except ValueError:
        return None


def _fast_read(labels: dict) -> bool:
    bound = _READ_BOUND.get(labels.get("scope", ""))
    return bound is not None and _le_num(labels.get("le")) == bound


def _fast_write(labels: dict) -> bool:
    return _le_num(labels.get("le")) == 1.0  # kubernetes-mixin matches le=~"1(\\.0)?"


def _label_in(name: str, values: frozenset) -> Callable[[dict], bool]:
    def ok(labels: dict) -> bool:
        return labels.get(name) in values

    return ok


def _real_container(labels: dict) -> bool:
    return labels.get("container", "") not in ("", "POD")


@dataclass(frozen=True)
class Signal:
    """One derived signal: its inputs, how it aggregates them, which labels it keeps.

    ``inputs`` are ``(metric, part, filter)``: a source series of ``metric`` passing ``filter``
    contributes its value -- or, with ``rate``, its per-second rate -- as ``part`` (``num``,
    ``den``, ``x``, ``gate``, ``lo``, ``hi``; quantiles use the series' ``le``); as part ``held`` it contributes
    the seconds its value has not changed (PromQL's ``changes(x[hold]) == 0``: a ratio or difference has no value
    while a ``held`` series changed less than ``hold`` seconds ago; unchanged since first seen counts as held).  ``kind``: ``sum`` of ``x``; ``ratio``
    = sum(num) / sum(den) (``1 - ratio`` with ``complement``); ``difference`` = sum(num) -
    sum(den), with no value unless lo < sum(den) < hi for the bounds ``lo`` and ``hi`` (when seen); either has
    no value while a ``gate`` series is not 0 (none seen: no gate); ``error_budget``, with parts ``num:<class>``, ``fast:<class>`` and ``den:<class>``: the sum over
    classes of (sum(num) - sum(fast)) / sum(den) (kubernetes-mixin's read + write burn rate: all requests of the
    latency SLI, less those fast enough, plus 5xx, over requests); ``quantile`` over the summed buckets;
    ``xid_changes`` and ``until`` (a gauge holding a Unix time,
    as the seconds from the sample's time to it: a certificate's expiry) are per series (no re-keying).
    """

    name: str
    kind: str
    inputs: tuple
    by: tuple[str, ...] = ("cluster", "instance")  # labels kept on the output (absent ones are left out)
    rate: bool = False
    complement: bool = False
    no_num_is_zero: bool = False  # num is a filtered subset of den (5xx of all): none seen = 0
    counted: tuple[str, ...] = ()  # parts whose series count 1 each, whatever their value (CPUs: idle-time series)
    total: bool = False  # each source counter with its resets added back (since first seen): a sum of them is a counter
    hold: float = 0.0  # seconds every ``held`` part must have kept its value
    q: float = 0.99

    @functools.cached_property
    def gated(self) -> bool:
        return any(part == "gate" for _, part, _ in self.inputs)


_CT = ("cluster", "namespace", "pod", "container")
SIGNALS = (
    Signal("apiserver_request_rate", "sum", (("apiserver_request_total", "x", None),), rate=True),
    Signal("apiserver_5xx_ratio", "ratio", (("apiserver_request_total", "den", None),
                                             ("apiserver_request_total", "num", _is_5xx)),
           by=("cluster", "instance", "verb"), rate=True, no_num_is_zero=True),
    # the cluster's availability as its error budget sees it (burn-rate rules), kubernetes-mixin's burnrate recording
    # rules: for reads and for writes, (requests too slow for the SLI + 5xx answers) / requests, the two summed
    Signal("apiserver_error_ratio", "error_budget", (
        ("apiserver_request_total", "den:read", _verbs(_READS)),
        ("apiserver_request_total", "den:write", _verbs(_WRITES)),
        ("apiserver_request_total", "num:read", _verbs(_READS, failed=True)),
        ("apiserver_request_total", "num:write", _verbs(_WRITES, failed=True)),
        ("apiserver_request_sli_duration_seconds_count", "num:read", _sli(_READS)),
        ("apiserver_request_sli_duration_seconds_count", "num:write", _sli(_WRITES)),
        ("apiserver_request_sli_duration_seconds_bucket", "fast:read", _sli(_READS, _fast_read)),
        ("apiserver_request_sli_duration_seconds_bucket", "fast:write", _sli(_WRITES, _fast_write))),
           by=("cluster",), rate=True),
    Signal("apiserver_p99_latency_seconds", "quantile",
           (("apiserver_request_duration_seconds_bucket", "le", _not_long_running),),
           by=("cluster", "instance", "verb", "resource"), rate=True),
    Signal("apiserver_webhook_p99_latency_seconds", "quantile",
           (("apiserver_admission_webhook_admission_duration_seconds_bucket", "le", None),),
           by=("cluster", "instance", "name", "type", "operation"), rate=True),
    # kubernetes-mixin's KubeClientCertificateExpiration: the 1st percentile of the remaining lifetime of the client
    # certificates presented lately (the scheduler and controller-manager count those presented to them too)
    Signal("apiserver_client_certificate_expiry_p1_seconds", "quantile",
           (("apiserver_client_certificate_expiration_seconds_bucket", "le", None),),
           by=("cluster", "job", "instance"), rate=True, q=0.01),
    # kubernetes-mixin's KubeClientErrors: each API client (controller-manager, scheduler, kubelet, the apiserver's
    # own loopback) by the answers it got
    Signal("rest_client_5xx_ratio", "ratio", (("rest_client_requests_total", "den", None),
                                              ("rest_client_requests_total", "num", _is_5xx)),
           by=("cluster", "job", "instance"), rate=True, no_num_is_zero=True),
    # kubernetes-mixin's KubeAggregatedAPIErrors sums an APIService's losses over reasons and API servers; each one's
    # resets added back first, so the sum stays a counter when one API server restarts (its total does not drop)
    Signal("aggregator_unavailable_apiservice_all_reasons_total", "sum",
           (("aggregator_unavailable_apiservice_total", "x", None),), by=("cluster", "name"), total=True),
    Signal("coredns_request_rate", "sum", (("coredns_dns_requests_total", "x", None),), rate=True),
    Signal("ingress_5xx_ratio", "ratio", (("nginx_ingress_controller_requests", "den", None),
                                          ("nginx_ingress_controller_requests", "num", _http_5xx("status"))),
           by=("cluster", "namespace", "ingress"), rate=True, no_num_is_zero=True),
    Signal("ingress_certificate_expiry_seconds", "until", (("nginx_ingress_controller_ssl_expire_time_seconds", "x", None),),
           by=("cluster", "namespace", "ingress", "host", "secret_name")),
    Signal("etcd_fsync_p99_seconds", "quantile", (("etcd_disk_wal_fsync_duration_seconds_bucket", "le", None),),
           rate=True),
    Signal("etcd_commit_p99_seconds", "quantile",
           (("etcd_disk_backend_commit_duration_seconds_bucket", "le", None),), rate=True),
    Signal("etcd_grpc_failed_ratio", "ratio", (("grpc_server_handled_total", "den", _etcd),
                                               ("grpc_server_handled_total", "num", _etcd_grpc_failure)),
           by=("cluster", "instance", "grpc_service", "grpc_method"), rate=True, no_num_is_zero=True),
    Signal("etcd_db_quota_used_ratio", "ratio", (("etcd_mvcc_db_total_size_in_bytes", "num", None),
                                                  ("etcd_server_quota_backend_bytes", "den", None))),
    Signal("gpu_xid_errors", "xid_changes", (("DCGM_FI_DEV_XID_ERRORS", "x", None),), by=()),
    Signal("kubelet_pleg_relist_p99_seconds", "quantile",
           (("kubelet_pleg_relist_duration_seconds_bucket", "le", None),), by=("cluster", "instance", "node"),
           rate=True),
    # node-exporter-mixin's guard on every filesystem alert (node_filesystem_readonly == 0): a read-only filesystem
    # neither fills nor empties (NodeFilesystemReadOnly, from the kernel, says it went read-only)
    Signal("node_filesystem_avail_ratio", "ratio", (("node_filesystem_avail_bytes", "num", None),
                                                     ("node_filesystem_size_bytes", "den", None),
                                                     ("node_filesystem_readonly", "gate", None)),
           by=("cluster", "instance", "device", "fstype", "mountpoint")),
    Signal("node_filesystem_files_free_ratio", "ratio", (("node_filesystem_files_free", "num", None),
                                                          ("node_filesystem_files", "den", None),
                                                          ("node_filesystem_readonly", "gate", None)),
           by=("cluster", "instance", "device", "fstype", "mountpoint")),
    Signal("node_memory_available_ratio", "ratio", (("node_memory_MemAvailable_bytes", "num", None),
                                                     ("node_memory_MemTotal_bytes", "den", None))),
    Signal("node_cpu_utilisation", "ratio", (("node_cpu_seconds_total", "den", None),
                                              ("node_cpu_seconds_total", "num", _label_is("mode", "idle"))),
           rate=True, complement=True),
    # node-exporter-mixin's NodeSystemSaturation and NodeFileDescriptorLimit
    Signal("node_load1_per_cpu", "ratio", (("node_load1", "num", None),
                                            ("node_cpu_seconds_total", "den", _label_is("mode", "idle"))),
           counted=("den",)),
    Signal("node_filefd_used_ratio", "ratio", (("node_filefd_allocated", "num", None),
                                                ("node_filefd_maximum", "den", None))),
    Signal("node_nf_conntrack_usage_ratio", "ratio", (("node_nf_conntrack_entries", "num", None),
                                                       ("node_nf_conntrack_entries_limit", "den", None))),
    # kubernetes-mixin's PersistentVolume alerts leave out a claim mounted read-only (ReadOnlyMany) and one labelled
    # excluded_from_alerts=true (kube-state-metrics, with that label allowed): such a claim gets no ratio
    Signal("kubelet_volume_avail_ratio", "ratio", (("kubelet_volume_stats_available_bytes", "num", None),
                                                    ("kubelet_volume_stats_capacity_bytes", "den", None), *_PVC_GATES),
           by=("cluster", "namespace", "persistentvolumeclaim")),
    Signal("kubelet_volume_inodes_free_ratio", "ratio", (("kubelet_volume_stats_inodes_free", "num", None),
                                                          ("kubelet_volume_stats_inodes", "den", None), *_PVC_GATES),
           by=("cluster", "namespace", "persistentvolumeclaim")),
    Signal("container_memory_limit_ratio", "ratio",
           (("container_memory_working_set_bytes", "num", _real_container),
            ("container_spec_memory_limit_bytes", "den", _real_container)), by=_CT),
    Signal("container_cpu_throttled_ratio", "ratio",
           (("container_cpu_cfs_throttled_periods_total", "num", _real_container),
            ("container_cpu_cfs_periods_total", "den", _real_container)), by=_CT, rate=True),
    Signal("kube_statefulset_status_replicas_unavailable", "difference",
           (("kube_statefulset_replicas", "num", None), ("kube_statefulset_status_replicas_ready", "den", None)),
           by=("cluster", "namespace", "statefulset")),
    # kubernetes-mixin's KubeDeploymentGenerationMismatch / KubeStatefulSetGenerationMismatch: a spec the controller
    # has not observed (a rollout that failed and was not rolled back)
    Signal("kube_deployment_generation_mismatch", "difference",
           (("kube_deployment_metadata_generation", "num", None),
            ("kube_deployment_status_observed_generation", "den", None)), by=("cluster", "namespace", "deployment")),
    Signal("kube_statefulset_generation_mismatch", "difference",
           (("kube_statefulset_metadata_generation", "num", None),
            ("kube_statefulset_status_observed_generation", "den", None)), by=("cluster", "namespace", "statefulset")),
    Signal("kube_daemonset_not_scheduled", "difference",
           (("kube_daemonset_status_desired_number_scheduled", "num", None),
            ("kube_daemonset_status_current_number_scheduled", "den", None)), by=("cluster", "namespace", "daemonset")),
    # kubernetes-mixin's KubeHpaReplicasMismatch counts only an HPA strictly between its bounds (at a bound it cannot
    # move further that way: KubeHpaMaxedOut says so at the top, and at the bottom it is where it should be), and only
    # once its current count has not changed for 15m (`changes(current[15m]) == 0`: a workload still scaling is not stuck)
    Signal("kube_hpa_replicas_mismatch", "difference",
           (("kube_horizontalpodautoscaler_status_desired_replicas", "num", None),
            ("kube_horizontalpodautoscaler_status_current_replicas", "den", None),
            ("kube_horizontalpodautoscaler_status_current_replicas", "held", None),
            ("kube_horizontalpodautoscaler_spec_min_replicas", "lo", None),
            ("kube_horizontalpodautoscaler_spec_max_replicas", "hi", None)),
           by=("cluster", "namespace", "horizontalpodautoscaler"), hold=900.0),
    Signal("kube_pdb_healthy_shortfall", "difference",
           (("kube_poddisruptionbudget_status_desired_healthy", "num", None),
            ("kube_poddisruptionbudget_status_current_healthy", "den", None)),
           by=("cluster", "namespace", "poddisruptionbudget")),
    # kubernetes-mixin's KubePodNotReady: per pod, in a not-ready phase (sum = max: one phase is 1 at a time), and not
    # a Job's pod (its kube_pod_owner{owner_kind="Job"} gates it out, as the mixin's owner_kind!="Job" join does)
    Signal("kube_pod_not_ready", "sum",
           (("kube_pod_status_phase", "x", _label_in("phase", frozenset({"Pending", "Unknown", "Failed"}))),
            ("kube_pod_owner", "gate", _label_is("owner_kind", "Job"))), by=("cluster", "namespace", "pod")),
    # node-exporter-mixin's NodeNetworkReceiveErrs / NodeNetworkTransmitErrs: errors over packets
    Signal("node_network_receive_error_ratio", "ratio",
           (("node_network_receive_errs_total", "num", None), ("node_network_receive_packets_total", "den", None)),
           by=("cluster", "instance", "device"), rate=True, no_num_is_zero=True),
    Signal("node_network_transmit_error_ratio", "ratio",
           (("node_network_transmit_errs_total", "num", None), ("node_network_transmit_packets_total", "den", None)),
           by=("cluster", "instance", "device"), rate=True, no_num_is_zero=True),
    # node-exporter-mixin's NodeClockNotSynchronising: `sync_status == 0 and maxerror >= 16`: the max error, with no
    # value while the clock is synchronised (sync_status 1 gates it out; den is that 0, so the difference is maxerror)
    Signal("node_timex_unsynchronised_maxerror_seconds", "difference",
           (("node_timex_maxerror_seconds", "num", None), ("node_timex_sync_status", "den", None),
            ("node_timex_sync_status", "gate", None))),
    Signal("kube_resourcequota_used_ratio", "ratio",
           (("kube_resourcequota", "num", _label_is("type", "used")),
            ("kube_resourcequota", "den", _label_is("type", "hard"))),
           by=("cluster", "namespace", "resourcequota", "resource")),
)


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """PromQL's ``histogram_quantile`` over cumulative bucket counts (or rates) by upper bound.

    None when undefined (no ``+Inf`` bucket, no observations).

    >>> round(histogram_quantile(0.5, {0.1: 2, 0.2: 6, 0.4: 8, math.inf: 8}), 6)
    0.15
    >>> histogram_quantile(0.99, {0.1: 0, 1.0: 0, math.inf: 5})  # in the +Inf bucket: the highest finite bound
    1.0
    >>> histogram_quantile(0.99, {1.0: 0, math.inf: 0}) is None
    True
    """
    bounds = sorted(buckets)
    if not bounds or bounds[-1] != math.inf or len(bounds) < 2:
        return None
    counts, top = [], 0.0
    for b in bounds:  # enforce monotonicity (rates of separately scraped buckets can wobble)
        top = max(top, buckets[b])
        counts.append(top)
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    i = next(i for i, c in enumerate(counts) if c >= rank)
    if i == len(bounds) - 1:
        return bounds[-2]
    if i == 0 and bounds[0] <= 0:
        return bounds[0]
    start, end, count = 0.0, bounds[i], counts[i]
    if i > 0:
        start, count, rank = bounds[i - 1], counts[i] - counts[i - 1], rank - counts[i - 1]
    if count <= 0:
        return end
    return start + (end - start) * (rank / count)


def _le(v: str) -> float:
    return math.inf if v in ("+Inf", "Inf", "inf") else float(v)


class Derived:
    """The derived-signals stage: ``process(sample, state, emit)`` / ``tick(now, state, emit)``."""

    accepts = (Sample,)  # the hot path gives it samples only (see streams.hotpath.Pipeline)

    def __init__(self, signals=SIGNALS, window: float = 300.0, staleness: float = 300.0, settle: float = 1.0,
                 forget: float = 3600.0):
        self.window = window
        self.staleness = staleness
        self.settle = settle
        self.forget = max(forget, window, staleness)  # a source series silent this long is forgotten (``_sweep``)
        self.by_source: dict[str, list[tuple[Signal, str, Callable | None]]] = {}
        for sig in signals:
            for metric, part, where in sig.inputs:
                self.by_source.setdefault(metric, []).append((sig, part, where))
        self.by_name = {s.name: s for s in signals}
        self.by_partial = {f"{s.name}:partial": s for s in signals}
        self._index = PerState(self._build_index)  # state -> {dkey: due time}, gone with the state
        self._keys = PerState(self._build_keys)  # state -> this stage's keys in it (what a sweep looks at)
        self._dkeys: dict[tuple, bytes] = {}  # (signal, its by-values) -> the derived series' Kafka key

    # ---------------------------------------------------------------- records in

    def wants(self, rtype: type, name) -> bool:
        """The samples ``process`` does something with (by name): sources of a derived signal, and partials."""
        return rtype is Sample and (name in self.by_source or name in self.by_partial)

    def process(self, rec, state: MutableMapping, emit) -> None:
        if type(rec) is not Sample:
            return
        uses = self.by_source.get(rec.name)
        if uses is None and rec.name not in self.by_partial:
            return  # most samples: neither a source of a derived signal nor a partial
        labels = rec.labels
        mark = labels.get(MARK)
        if mark == "partial":
            sig = self.by_partial.get(rec.name)
            if sig is not None:
                self._collect(sig, rec, state)
            return
        if mark is not None:
            return
        if not uses:
            return
        v = rec.value
        if v - v != 0.0:  # NaN or +-Inf (their difference is NaN): no rate, no total, no gauge part from it -- in state
            return  # it would poison the series (an infinite total for good) and read back as null after a restart
        series = None
        counter = _UNSET  # (rate, total) once, for the first signal that wants it: a series no filter passes keeps none
        held = _UNSET  # likewise its age: every signal holding on this series reads the one state update
        for sig, part, where in uses:
            if where is not None and not where(labels):
                continue
            if series is None:
                series = rec.series()
            if sig.kind == "xid_changes":
                self._xid(sig, series, rec, state, emit)
                continue
            if sig.kind == "until":  # per series, no state: a timestamp gauge as the seconds left until it
                d = Sample(sig.name, rec.value - rec.time, rec.time, {**self._out_labels(sig, labels), MARK: "derived"})
                emit("samples", d.key(), encode(d))
                continue
            if part in sig.counted:
                value = 1.0
            elif part == "held":
                if held is _UNSET:
                    held = self._held(series, rec, state)
                value = held
            elif sig.rate or sig.total:
                if counter is _UNSET:
                    counter = self._counter(series, rec, state)
                value = counter[0] if sig.rate else counter[1]
            else:
                value = rec.value
            if value is None or value != value:
                continue
            if part == "le":
                part = labels.get("le")
                if _le_num(part) is None:  # no le, or not a number ("0,5"): PromQL skips such a bucket too
                    continue
            self._partial(sig, rec, series, part, value, emit)

    def _counter(self, series: str, rec: Sample, state) -> tuple[float | None, float]:
        """(per-second rate over ``window``, total) of a counter, across resets: the rate is None until two points, the
        total counts from the series' first point here (resets added back).

        State: ``[value, adjusted total, t, t0, a0, t1, a1, ...]`` -- the last raw value, the total
        with resets added back, its time, then anchors (time, total) at least window/(ANCHORS-1)
        apart; the rate runs from the newest anchor at or before ``t - window`` (or the oldest).
        """
        key = f"{PREFIX}c|{short(series)}"
        st = state.get(key)
        t, v = rec.time, rec.value
        if st is None:
            state[key] = [v, 0.0, t, t, 0.0]
            self._keys(state).add(key)
            return None, 0.0
        prev, adj, last = st[0], st[1], st[2]
        if t <= last or v != v:  # duplicate, out of order or NaN: no new information
            return None, adj
        adj += v if v < prev else v - prev
        anchors = st[3:]
        if t - anchors[-2] >= self.window / (ANCHORS - 1):
            anchors += [t, adj]
        while len(anchors) > 2 and (anchors[2] <= t - self.window or len(anchors) > 2 * ANCHORS):
            del anchors[:2]
        state[key] = [v, adj, t, *anchors]
        t0, a0 = anchors[0], anchors[1]
        return ((adj - a0) / (t - t0) if t > t0 else None), adj

    def _held(self, series: str, rec: Sample, state) -> float | None:
        """Seconds since the series' value last changed; a series unchanged since first seen here reads as held
        for ``HELD_UNSEEN`` seconds more (PromQL's ``changes`` over a short history is 0 too).

        State: ``[value, time of the last change, time]``; None for a duplicate or out-of-order point.
        """
        key = f"{PREFIX}h|{short(series)}"
        st = state.get(key)
        t, v = rec.time, rec.value
        if st is None:
            state[key] = [v, t - HELD_UNSEEN, t]
            self._keys(state).add(key)
            return HELD_UNSEEN
        if t <= st[2]:
            return None
        since = st[1] if v == st[0] or (v != v and st[0] != st[0]) else t
        state[key] = [v, since, t]
        return t - since

    def _out_labels(self, sig: Signal, labels: dict) -> dict:
        return {k: labels[k] for k in sig.by if k in labels}

    def _partial(self, sig: Signal, rec: Sample, series: str, part: str, value: float, emit) -> None:
        out = self._out_labels(sig, rec.labels)
        memo = (sig.name, *out.items())
        dkey = self._dkeys.get(memo)
        if dkey is None:
            if len(self._dkeys) >= 65536:
                self._dkeys.clear()
            dkey = self._dkeys[memo] = Sample(sig.name, 0.0, 0.0, {**out, MARK: "derived"}).key()
        p = Sample(f"{sig.name}:partial", value, rec.time, {**out, MARK: "partial", "src": series, "part": part})
        emit("samples", dkey, encode(p))

    def _xid(self, sig: Signal, series: str, rec: Sample, state, emit) -> None:
        """Count new Xid codes per GPU over the window (the gauge holds the LAST code, 0 = none)."""
        key = f"{PREFIX}x|{short(series)}"
        st = state.get(key)
        if st is None:
            st = {"last": 0, "t": None, "events": []}
            self._keys(state).add(key)
        t, code = rec.time, int(rec.value) if rec.value == rec.value else 0
        if st["t"] is not None and t <= st["t"]:
            return
        events = [e for e in st["events"] if e[0] > t - self.window]
        if code and code != st["last"]:
            events.append([t, code])
        state[key] = {"last": code, "t": t, "events": events}
        labels = {k: v for k, v in rec.labels.items() if k != MARK} if not sig.by else self._out_labels(sig, rec.labels)
        d = Sample(sig.name, float(len(events)), t, {**labels, MARK: "derived"})
        emit("samples", d.key(), encode(d))

    def _collect(self, sig: Signal, p: Sample, state) -> None:
        labels = {k: v for k, v in p.labels.items() if k not in (MARK, "src", "part")}
        labels[MARK] = "derived"
        dkey = short(Sample(sig.name, 0.0, 0.0, labels).series())
        key = AGG + dkey
        agg = state.get(key)
        if agg is None:
            agg = {"n": sig.name, "l": labels, "c": {}}
            self._keys(state).add(key)
        ckey = f"{p.labels.get('part', 'x')}|{short(p.labels.get('src', ''))}"
        contributions = agg["c"]
        old = contributions.get(ckey)
        if old is not None and p.time < old[1]:
            return
        if old is None and len(contributions) >= MAX_CONTRIBUTIONS:
            log.warning("%s%s: more than %d source series; %s left out", sig.name, labels, MAX_CONTRIBUTIONS,
                        p.labels.get("src"))
            return
        if sig.total:
            # a sum of counters stays a counter when a source comes and goes (PromQL's sum(increase(...))): each
            # contribution counts from its value when it (re)joined, [value, time, base]; one gone stale hands what it
            # counted to the aggregate's ``off`` (_settle_one). Its raw total, summed, fell when it left (a false
            # "reset" of 20 and an alert) and jumped back when it returned
            base = p.value if old is None else (old[2] if len(old) > 2 else 0.0)
            contributions[ckey] = [p.value, p.time, base]
        else:
            contributions[ckey] = [p.value, p.time]
        idx = self._index(state)
        due = idx.get(dkey)
        if due is None or due < p.time:
            idx[dkey] = p.time
            if p.time <= state.get(TICKED, -math.inf):  # older than what was emitted: remember it is due
                agg["late"] = p.time
        state[key] = agg

    def _build_index(self, state: MutableMapping) -> dict[str, float]:
        """Derived series waiting to be emitted in this state (dkey -> newest partial's time).

        Not stored: after a tick at ``now`` every series whose newest partial is at or before
        ``now - settle`` (the ``derived|ticked`` key) has been emitted and every other one has not,
        so a restored state tells which are due from its aggregates alone (a partial that arrived
        older than that mark is flagged ``late`` in its aggregate).
        """
        mark = state.get(TICKED, -math.inf)
        idx = {}
        for k, agg in state.items():
            if k.startswith(AGG) and agg["c"]:
                newest = max(v[1] for v in agg["c"].values())
                if newest > mark:
                    idx[k[len(AGG):]] = newest
                elif "late" in agg:
                    idx[k[len(AGG):]] = agg["late"]
        return idx

    # ---------------------------------------------------------------- timers

    def tick(self, now: float, state: MutableMapping, emit) -> None:
        swept = state.get(SWEPT)
        if (swept is None or now >= swept + SWEEP_EVERY) and now > -math.inf:  # -inf: a partition with no data yet
            self._sweep(now, state)
        idx = self._index(state)
        if not idx:
            return
        done = sorted((t, dkey) for dkey, t in idx.items() if now >= t + self.settle)
        if not done:
            return
        for t, dkey in done:
            del idx[dkey]
            self._settle_one(state, dkey, t, emit)
        mark = now - self.settle
        if mark > state.get(TICKED, -math.inf):
            state[TICKED] = mark

    @staticmethod
    def _build_keys(state: MutableMapping) -> set[str]:
        """This stage's keys in a state (counters, ages, Xid codes, aggregates), found once per restored state and
        then kept in step: a sweep looks at these only, not at every key of the partition (the rules' too)."""
        return {k for k in state if k.startswith(PREFIX) and k not in (TICKED, SWEPT)}

    def _sweep(self, now: float, state: MutableMapping) -> None:
        """Drop what series that went away left behind (every ``SWEEP_EVERY`` of event time, one pass over this
        state's keys): a source series' counter, held or Xid state silent for ``forget`` (pods come and go, and
        each of their series would keep a key for ever: the changelog too), and a derived series whose every
        contribution went stale while nothing made it due (no partial comes to settle it and drop it).  A series
        that comes back after ``forget`` starts afresh: its first point gives no rate yet, as a new one's does."""
        horizon, stale = now - self.forget, now - self.staleness
        idx = self._index(state)
        keys = self._keys(state)
        gone = []
        for k in list(keys):
            v = state.get(k)
            if v is None:  # dropped elsewhere (an aggregate settled with nothing live)
                keys.discard(k)
                continue
            what = k[len(PREFIX):len(PREFIX) + 2]
            if what in ("c|", "h|"):  # [value, ..., time, ...]
                if v[2] < horizon:
                    gone.append(k)
            elif what == "x|":
                if (v.get("t") if v.get("t") is not None else -math.inf) < horizon:
                    gone.append(k)
            elif what == "a|" and k[len(AGG):] not in idx:
                if all(c[1] <= stale for c in v["c"].values()):
                    gone.append(k)
        for k in gone:
            del state[k]
            keys.discard(k)
        state[SWEPT] = now
        if gone:
            log.debug("derived: forgot %d keys of series gone quiet", len(gone))

    def _settle_one(self, state: MutableMapping, dkey: str, t: float, emit) -> None:
        """Emit derived series ``dkey`` as of time ``t`` (its newest partial); drop contributions gone stale."""
        key = AGG + dkey
        agg = state.get(key)
        if agg is None:
            return
        live = {c: v for c, v in agg["c"].items() if v[1] > t - self.staleness}
        sig = self.by_name.get(agg["n"])
        if sig is not None and sig.total and len(live) != len(agg["c"]):
            agg["off"] = agg.get("off", 0.0) + sum(v[0] - (v[2] if len(v) > 2 else 0.0)
                                                   for c, v in agg["c"].items() if c not in live)
        if not live:
            del state[key]
            return
        if len(live) != len(agg["c"]) or "late" in agg:  # written only when it changed
            agg["c"] = live
            agg.pop("late", None)
            state[key] = agg
        try:
            value = None if sig is None else self._aggregate(sig, live.items())
        except (ValueError, TypeError, ArithmeticError) as exc:  # one series' odd partials: never every tick's
            log.warning("derived %s%s: not computed (%s: %s)", agg["n"], agg["l"], type(exc).__name__, exc)
            return
        if value is None or value != value:
            return
        if sig.total:
            value += agg.get("off", 0.0)
        d = Sample(sig.name, value, t, agg["l"])
        emit("samples", d.key(), encode(d))

    @staticmethod
    def _aggregate(sig: Signal, contributions) -> float | None:
        # contributions: (ckey = "part|source", [value, time])
        if sig.kind == "sum":  # a total's contributions count from their base (_collect)
            if not sig.gated:
                return float(sum(v[0] - (v[2] if len(v) > 2 else 0.0) for _, v in contributions))
            total = 0.0
            for c, v in contributions:
                if c.startswith("gate|"):
                    if v[0]:
                        return None  # a gate part that is not 0 (a Job's pod): no value
                    continue
                total += v[0] - (v[2] if len(v) > 2 else 0.0)
            return total
        parts: dict[str, list[float]] = {}  # part ("num", "den:read", a bucket's le, ...) -> its series' values
        for c, v in contributions:
            parts.setdefault(c.split("|", 1)[0], []).append(v[0])
        if sig.kind in ("ratio", "difference"):
            if any(parts.get("gate", ())):
                return None  # a gate part that is not 0 (a read-only filesystem): no value
            if any(h < sig.hold for h in parts.get("held", ())):
                return None  # a held part changed within ``hold`` (a workload still scaling): no value
            num, den = parts.get("num"), parts.get("den")
            if not num and sig.no_num_is_zero:
                num = [0.0]
            if not num or not den:  # one side not seen (yet): undefined, not 0
                return None
            if sig.kind == "difference":
                lo, hi = parts.get("lo"), parts.get("hi")
                if (lo and not sum(den) > sum(lo)) or (hi and not sum(den) < sum(hi)):
                    return None  # den at or beyond a bound: no value
                return float(sum(num) - sum(den))
            d = sum(den)
            if d <= 0:
                return None
            r = sum(num) / d
            return 1.0 - r if sig.complement else r
        if sig.kind == "error_budget":
            sums = {part: sum(xs) for part, xs in parts.items()}  # "num:read", "fast:read", "den:read", ...
            out = None
            for part, den in sums.items():
                if part.startswith("den:") and den > 0:
                    cls = part[4:]
                    r = (sums.get("num:" + cls, 0.0) - sums.get("fast:" + cls, 0.0)) / den
                    out = r if out is None else out + r
            return out
        if sig.kind == "quantile":
            buckets: dict[float, float] = {}
            for part, xs in parts.items():
                b = _le(part)
                buckets[b] = buckets.get(b, 0.0) + sum(xs)
            return histogram_quantile(sig.q, buckets)
        return None
