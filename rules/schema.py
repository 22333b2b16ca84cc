"""The RulePack schema (pydantic v2, unknown keys rejected); meaning checks live in ``rules.load``."""

from __future__ import annotations

import json
import re
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from core.durations import Duration
from core.matchers import Matchers
from rules.template import Template

API_VERSION = "kubesight.io/v1"
SEVERITIES = ("critical", "warning", "info")
CONDITIONS = ("event_count", "state", "threshold", "burn_rate", "predict", "absent", "anomaly", "anomaly_vector")
_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_PACK = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")
_METRIC = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def _str_list(v):
    if isinstance(v, str):
        return [v]
    return v


def _version(v):
    if isinstance(v, int | float) and not isinstance(v, bool):
        return str(v)
    return v


def _severity(v):
    if v not in SEVERITIES:
        shown = f'"{v}"' if isinstance(v, str) else repr(v)
        raise ValueError(f"invalid severity {shown} (use {', '.join(SEVERITIES)})")
    return v


def _label_name(v):
    if not isinstance(v, str) or not _NAME.match(v):
        raise ValueError(f'invalid label name "{v}" (use letters, digits and _, not starting with a digit)')
    return v


def _pack_name(v):
    if not isinstance(v, str) or not _PACK.match(v):
        raise ValueError(f'invalid pack name "{v}" (use lower-case letters, digits, "-" and ".")')
    return v


def _alert_name(v):
    if not isinstance(v, str) or not _NAME.match(v):
        raise ValueError(f'invalid alert name "{v}" (use letters, digits and _, e.g. KubeNodeNotReady)')
    return v


def _metric_name(v):
    # the engine indexes sample rules by the exact metric name: a selector or an expression here is looked up as a
    # name no sample has, and the rule never matches (nor says so)
    if not isinstance(v, str) or not _METRIC.match(v):
        raise ValueError(f"not a metric name: {json.dumps(v)} (names only, not PromQL: select series with "
                         "matchers, e.g. matchers: ['job=\"api\"'], and take a rate with condition: "
                         "{agg: rate, window: 5m})")
    return v


def _metric_list(v):
    if isinstance(v, str):  # one name: checked here, so that the error is at match.metric, not match.metric[0]
        return [_metric_name(v)]
    return v


def _static_label(v):
    # labels are an alert's identity (routes, inhibit rules, silences and the fingerprint match on them): they are
    # not rendered, so a template would reach Alertmanager as its literal text
    if isinstance(v, str) and "{{" in v:
        raise ValueError(f'labels are static: "{v}" is not rendered (templates go in annotations; the '
                         "signal's labels, e.g. namespace, are already on the alert)")
    return v


def _score(v):
    # a detector's score is in [0, 1] (detectors/base.py): a cut at or past either end never fires or always does
    if v is not None and not 0.0 < v < 1.0:
        raise ValueError(f"must be between 0 and 1, exclusive (a detector's score is in [0, 1]), got {v:g}")
    return v


def _template(v):
    if not isinstance(v, str):
        raise ValueError("expected a string")
    return Template(v)


StrList = Annotated[list[str], BeforeValidator(_str_list)]
Severity = Annotated[str, BeforeValidator(_severity)]
LabelName = Annotated[str, BeforeValidator(_label_name)]
StaticLabel = Annotated[str, AfterValidator(_static_label)]
MetricList = Annotated[list[Annotated[str, BeforeValidator(_metric_name)]], BeforeValidator(_metric_list)]
Score = Annotated[float | None, AfterValidator(_score)]
TemplateT = Annotated[Any, BeforeValidator(_template)]


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, populate_by_name=False)


class Metadata(_Base):
    name: Annotated[str, BeforeValidator(_pack_name)]
    version: Annotated[str, BeforeValidator(_version)]
    description: str = ""


class Defaults(_Base):
    for_: Duration = Field(0.0, alias="for")
    severity: Severity = "warning"
    labels: dict[LabelName, StaticLabel] = {}
    stale_after: Duration = 300.0


class DetectorSpec(_Base):
    type: str
    params: dict[str, Any] = {}


class Match(_Base):
    source: StrList | None = None
    reason: StrList | None = None
    kind: StrList | None = None
    metric: MetricList | None = None
    matchers: Matchers = ()


class EventCount(_Base):
    """N matching events within ``window`` per group; holds until the window slides past them.

    ``by`` counts across entities: one group per value of these labels of the events (``[cluster, namespace]``:
    "50 FailedScheduling in one namespace"), whatever pod or workload each event is about.  The worker re-keys a
    copy of each matching event by them (``rules.engine.Engine.rekey``), so the events of one group meet on one
    partition wherever their entities live."""

    type: Literal["event_count"]
    count: int = Field(1, ge=1, le=1000)
    window: Duration = 600.0
    by: Annotated[list[LabelName], Field(min_length=1)] | None = None


class State(_Base):
    """Set by a matching event, cleared by one of ``resolve_reasons`` on the same entity from any source
    (matchers apply to the setting events only), or after ``timeout`` without a setting event."""

    type: Literal["state"]
    resolve_reasons: StrList
    timeout: Duration = 0.0


class Threshold(_Base):
    """Aggregate of a series over ``window`` compared with ``value``; ``resolve`` adds hysteresis; ``abs`` compares
    the aggregate's magnitude (a clock offset either way: node-exporter-mixin's ``> 0.05 or < -0.05``); ``under``
    bounds it from above too (kubernetes-mixin's KubeQuotaAlmostFull: ``> 0.9 < 1``)."""

    type: Literal["threshold"]
    op: Literal[">", ">=", "<", "<=", "==", "!="]
    value: float
    resolve: float | None = None
    abs: bool = False
    under: float | None = None  # and strictly below this (a second bound, as PromQL's `> 0.9 < 1`)
    agg: Literal["last", "avg", "min", "max", "sum", "count", "rate", "increase"] = "last"
    window: Duration = 0.0
    stale_after: Duration | None = None


class BurnWindow(_Base):
    """One window pair of a burn-rate condition: the budget burns ``factor`` times too fast over both, and has for
    ``for`` (kubernetes-mixin gives each pair its own: 2m for 1h/5m, 15m for 6h/30m, 1h for 1d/2h, 3h for 3d/6h)."""

    long: Duration
    short: Duration
    factor: float = Field(gt=0.0)
    for_: Duration = Field(0.0, alias="for")


class BurnRate(_Base):
    """Multi-window, multi-burn-rate error-budget alert (the SRE workbook's, kubernetes-mixin's
    KubeAPIErrorBudgetBurn) on a series that is an error ratio (0..1): it holds while, for some pair of
    ``windows``, the ratio's mean over ``long`` *and* over ``short`` both exceed ``factor`` x (1 - ``objective``).
    The long window says the burn matters, the short one that it is still going on (so the alert clears
    minutes after the errors stop, not hours); a pair with a ``for`` must have held that long, without a break, to
    count.  Means are over time (see ``rules.conditions.br_update``)."""

    type: Literal["burn_rate"]
    objective: float = Field(gt=0.0, lt=1.0)
    windows: Annotated[list[BurnWindow], Field(min_length=1, max_length=8)]
    stale_after: Duration | None = None

    @cached_property
    def lengths(self) -> tuple[float, ...]:
        """The distinct window lengths, shortest first: one bucket ring each in the condition's state."""
        return tuple(sorted({w for p in self.windows for w in (p.long, p.short)}))


class Now(_Base):
    """A test of a series' latest value (``predict``'s ``now``)."""

    op: Literal[">", ">=", "<", "<="]
    value: float


class Predict(_Base):
    """PromQL's ``predict_linear``: the least-squares line through the series over ``window``, extended ``horizon``
    past the latest point, compared with ``value`` (kubernetes-mixin's and node-exporter-mixin's "fills up within
    4 days / 24 hours": ``{op: "<", value: 0, window: 6h, horizon: 4d}`` on a free-space ratio); with ``now``, the
    latest value must pass that test too (the mixins' "and less than 15% free").  The line is fitted from 12 time
    buckets of sums per window (bounded state), over at least a twelfth of the window.  In annotations ``{{ value }}``
    is the latest value (not the prediction)."""

    type: Literal["predict"]
    op: Literal[">", ">=", "<", "<="]
    value: float
    window: Duration
    horizon: Duration
    now: Now | None = None
    stale_after: Duration | None = None


class Absent(_Base):
    """A signal seen before that has not been seen for ``after``; after ``forget`` of silence (if set)
    the signal counts as gone for good: the alert resolves and its state is dropped."""

    type: Literal["absent"]
    after: Duration
    forget: Duration = 0.0


class Anomaly(_Base):
    """A declared detector's score above ``above`` or above the ``quantile`` of its recent scores,
    on at least ``k`` of the last ``n`` points."""

    type: Literal["anomaly"]
    detector: str
    above: Score = None
    quantile: float | None = Field(None, gt=0.0, lt=1.0)
    history: int = Field(200, ge=10, le=2000)
    k: int = Field(1, ge=1)
    n: int = Field(1, ge=1, le=64)
    stale_after: Duration | None = None


class AnomalyVector(_Base):
    """One entity's metrics (the rule's ``match.metric``, one series each per entity) scored together
    by a vector detector: per ``by`` labels, the values of each ``every`` interval make one vector,
    scored when every metric has arrived (or, missing some, when the next interval begins); then as
    ``anomaly``: score above ``above`` or the ``quantile`` of recent scores, on ``k`` of ``n`` vectors."""

    type: Literal["anomaly_vector"]
    detector: str
    by: Annotated[list[LabelName], Field(min_length=1)]
    every: Duration = 60.0
    above: Score = None
    quantile: float | None = Field(None, gt=0.0, lt=1.0)
    history: int = Field(200, ge=10, le=2000)
    k: int = Field(1, ge=1)
    n: int = Field(1, ge=1, le=64)
    stale_after: Duration | None = None


Condition = Annotated[EventCount | State | Threshold | BurnRate | Predict | Absent | Anomaly | AnomalyVector,
                      Field(discriminator="type")]


# ---------------------------------------------------------------- what a rule does to its Node (opt-in)

_QNAME = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LVALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_CAMEL = re.compile(r"^[A-Z][A-Za-z0-9]{0,127}$")


def _qualified_name(v):
    if not isinstance(v, str) or not _QNAME.match(v) or len(v.rpartition("/")[0]) > 253:
        raise ValueError(f'invalid key "{v}" (a Kubernetes label/taint key: [prefix/]name, e.g. kubesight.io/gpu-unhealthy)')
    return v


def _label_value(v):
    if isinstance(v, bool) or not isinstance(v, str | int | float):
        raise ValueError("expected a string")
    v = str(v)
    if not _LVALUE.match(v):
        raise ValueError(f'invalid value "{v}" (up to 63 letters, digits, "-", "_", ".", starting and ending alphanumeric)')
    return v


def _camel(v):
    if not isinstance(v, str) or not _CAMEL.match(v):
        raise ValueError(f'invalid name "{v}" (UpperCamelCase, as Node conditions and reasons are, e.g. GPUUnhealthy)')
    return v


QualifiedName = Annotated[str, BeforeValidator(_qualified_name)]
LabelValue = Annotated[str, BeforeValidator(_label_value)]
CamelName = Annotated[str, BeforeValidator(_camel)]


class Cordon(_Base):
    """Mark the Node unschedulable (``kubectl cordon``)."""

    type: Literal["cordon"]


class Taint(_Base):
    """Add a taint to the Node (same key and effect: left as is)."""

    type: Literal["taint"]
    key: QualifiedName
    value: LabelValue = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"


class Drain(_Base):
    """Cordon, then evict the Node's pods through the Eviction API (PodDisruptionBudgets respected:
    a refused eviction is retried every ``retry`` until ``timeout``); DaemonSet and mirror pods stay.
    As ``kubectl drain`` without --force / --delete-emptydir-data (and draino's defaults), a pod no controller
    re-creates, or one with an emptyDir volume, is not evicted unless opted in: it holds the drain (``blocked``)."""

    type: Literal["drain"]
    retry: Duration = 30.0
    timeout: Duration = 3600.0
    evict_unreplicated: bool = False  # evict pods without a controller ownerReference: gone for good once evicted
    delete_emptydir_data: bool = False  # evict pods with an emptyDir volume: its data is lost


class Label(_Base):
    """Set a label on the Node (e.g. for a repair controller to pick up)."""

    type: Literal["label"]
    key: QualifiedName
    value: LabelValue = "true"


ACTIONS = ("cordon", "taint", "drain", "label")


def _action_type(v):
    """Name a wrong or missing action type plainly (before the discriminated union sees it)."""
    if isinstance(v, dict) and v.get("type") not in ACTIONS:
        got = v.get("type")
        raise ValueError("type: required (one of cordon, taint, drain, label)" if got is None else
                         f'type: expected one of cordon, taint, drain, label, got "{got}"')
    return v


Action = Annotated[Cordon | Taint | Drain | Label, Field(discriminator="type"), BeforeValidator(_action_type)]


class NodeCondition(_Base):
    """A Node condition (node-problem-detector style) set True while the alert fires, False after."""

    type: CamelName
    reason: CamelName
    ok_reason: CamelName | None = None  # default No<type>
    ok_message: str | None = None  # default "no <type>"


class NodeEvent(_Base):
    """A Kubernetes Event posted on the Node when the alert starts firing (a one-off problem)."""

    reason: CamelName
    type: Literal["Warning", "Normal"] = "Warning"


class Rule(_Base):
    alert: Annotated[str, BeforeValidator(_alert_name)]
    match: Match
    condition: Condition
    for_: Duration | None = Field(None, alias="for")
    severity: Severity | None = None
    labels: dict[LabelName, StaticLabel] = {}
    annotations: dict[LabelName, TemplateT] = {}
    group_by: list[LabelName] = []
    node_condition: NodeCondition | None = None  # NPD-style condition on the alert's node
    node_event: NodeEvent | None = None  # NPD-style Event on the alert's node
    actions: list[Action] = []  # opt-in remediation (dry-run unless settings.remediation.dry_run is false)


class RulePack(_Base):
    apiVersion: str
    kind: str
    metadata: Metadata
    defaults: Defaults = Defaults()
    detectors: dict[LabelName, DetectorSpec] = {}
    disable: list[str] = []  # alert names of other packs to switch off (e.g. KubeSchedulerDown on managed control planes)
    rules: list[Rule]


# ---------------------------------------------------------------- rule test files (promtool spirit)


class InputEvent(_Base):
    at: Duration
    source: str
    reason: str
    type: str = "Warning"
    entity: dict[str, str] = {}
    labels: dict[str, str] = {}
    message: str = ""
    repeat: int = Field(1, ge=1, le=10000)
    every: Duration = 60.0


class InputSeries(_Base):
    series: str
    values: str


class ExpectedAlert(_Base):
    labels: dict[str, str]
    annotations: dict[str, str] = {}
    status: Literal["firing", "resolved"] = "firing"


class AlertCheck(_Base):
    eval_time: Duration
    alertname: str
    exp_alerts: list[ExpectedAlert] = []


class Case(_Base):
    name: str
    interval: Duration = 60.0
    input_series: list[InputSeries] = []
    input_events: list[InputEvent] = []
    alert_rule_test: list[AlertCheck]


class CaseFile(_Base):
    rule_files: StrList
    evaluation_interval: Duration = 60.0
    tests: list[Case]
