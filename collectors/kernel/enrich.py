"""Label enrichers named by patterns: memory cgroup -> pod/container, NVIDIA Xid catalogue, CPER severity.

>>> memcg_labels("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-poda8697f49_441d_4d4f_90d2_6d8e1fa3bbe7.slice/cri-containerd-3fc28fa1c647ceede9f6b340d0b16c9f1f663698972d22a52e296f291638e014.scope")["pod_uid"]
'a8697f49-441d-4d4f-90d2-6d8e1fa3bbe7'
>>> memcg_labels("/kubepods/besteffort/pod0b3f2e1c-9d8a-4a5b-8c7d-1e2f3a4b5c6d/4f1e")["qos_class"]
'besteffort'
>>> cat = XidCatalog.load()
>>> cat.classify(79, "catalog"), cat.classify(13, "catalog"), cat.classify(13, [13])
('fatal', 'application', 'fatal')

Xid 154 names the recovery action the GPU now needs; a reset, reboot or drain is fatal:

>>> cat.classify(154, "catalog", "GPU recovery action changed from 0x0 (None) to 0x2 (Node Reboot Required)")
'fatal'
>>> cat.classify(154, "catalog", "GPU recovery action changed from 0x1 (GPU Reset Required) to 0x0 (None)")
'informational'
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from importlib import resources

_POD = re.compile(r"(?:^|[/-])pod(?P<uid>[0-9a-f]{8}([-_])[0-9a-f]{4}\2[0-9a-f]{4}\2[0-9a-f]{4}\2[0-9a-f]{12})(?:\.slice)?(?:/|$)")
_CONTAINER = re.compile(r"/(?:(?P<rt>cri-containerd|docker|crio|containerd)-)?(?P<id>[0-9a-f]{12,64})(?:\.scope)?/?$")
_QOS = re.compile(r"kubepods[-/.](?:kubepods-)?(burstable|besteffort)\b")


def memcg_labels(path: str) -> dict[str, str]:
    """A memory cgroup path -> pod_uid, container_id, container_runtime, qos_class (those present)."""
    out: dict[str, str] = {}
    m = _POD.search(path)
    if m:
        out["pod_uid"] = m.group("uid").replace("_", "-")
        q = _QOS.search(path)
        out["qos_class"] = q.group(1) if q else "guaranteed"
        c = _CONTAINER.search(path)
        if c and c.start() > m.start():
            out["container_id"] = c.group("id")
            if c.group("rt"):
                out["container_runtime"] = c.group("rt")
    return out


# NVIDIA resolution buckets (immediate action) that mean the GPU or node must be reset/rebooted/serviced.
FATAL_ACTIONS = ("RESET_GPU", "RESTART_BM", "RESTART_VM", "CONTACT_SUPPORT", "CHECK_MECHANICALS",
                 "WORKFLOW_XID_48", "WORKFLOW_NVLINK_ERR", "WORKFLOW_NVLINK5_ERR")
INFO_ACTIONS = ("IGNORE", "XID_154")
CLASS_SEVERITY = {"fatal": "critical", "application": "warning", "informational": "info", "unknown": "warning"}
# Xid 154 "GPU recovery action changed from 0x0 (None) to 0x2 (Node Reboot Required)": the action after "to"
_RECOVERY = re.compile(r".*\bto (?:0x[0-9a-fA-F]+ )?\((?P<action>[^)]*)\)")
_RECOVERY_FATAL = re.compile(r"(?i)reboot|reset|drain")


def recovery_action(detail: str) -> str | None:
    """The recovery action an Xid 154 message says the GPU needs now (None if it does not say)."""
    m = _RECOVERY.match(detail)
    return m.group("action").strip() if m else None


@dataclass(frozen=True, slots=True)
class XidEntry:
    xid: int
    mnemonic: str
    description: str
    immediate_action: str
    investigatory_action: str


class XidCatalog:
    """The NVIDIA Xid catalogue (packaged copy of ``nvidia-xid-catalog/xid_catalog_summary.csv``)."""

    def __init__(self, entries: dict[int, XidEntry]):
        self.entries = entries

    @classmethod
    def load(cls, text: str | None = None) -> XidCatalog:
        if text is None:
            text = resources.files("collectors.kernel").joinpath("xid_catalog.csv").read_text()
        entries = {}
        for row in csv.DictReader(io.StringIO(text)):
            x = int(row["xid"])
            entries[x] = XidEntry(x, row["mnemonic"], row["description"], row["immediate_action"],
                                  row["investigatory_action"])
        return cls(entries)

    def classify(self, xid: int, fatal, detail: str = "") -> str:
        """fatal | application | informational | unknown; ``fatal`` is "catalog" or a list of codes.

        ``detail`` is the message after the code: for Xid 154 its recovery action decides (reset, reboot
        or drain: fatal; none: informational), unless ``fatal`` lists 154.
        """
        e = self.entries.get(xid)
        if xid == 154 and (fatal == "catalog" or xid not in fatal):
            action = recovery_action(detail)
            if action is not None:
                if _RECOVERY_FATAL.search(action):
                    return "fatal"
                if action.lower() == "none":
                    return "informational"
        if fatal != "catalog":
            if xid in fatal:
                return "fatal"
            if e is None:
                return "unknown"
            return "informational" if e.immediate_action in INFO_ACTIONS else "application"
        if e is None or not e.immediate_action:
            return "unknown"
        if e.immediate_action in FATAL_ACTIONS:
            return "fatal"
        if e.immediate_action in INFO_ACTIONS:
            return "informational"
        return "application"

    def labels(self, xid: int, fatal, detail: str = "") -> tuple[dict[str, str], str]:
        """Labels for one Xid (``detail``: the message after the code) and the event severity."""
        e = self.entries.get(xid)
        cls = self.classify(xid, fatal, detail)
        out = {"xid_class": cls, "xid_fatal": "true" if cls == "fatal" else "false"}
        if xid == 154 and (action := recovery_action(detail)) is not None:
            out["xid_recovery_action"] = action
        if e is not None:
            out.update(xid_mnemonic=e.mnemonic, xid_description=e.description,
                       xid_action=e.immediate_action or "UNKNOWN", xid_investigation=e.investigatory_action)
        else:
            out.update(xid_description="not in the Xid catalogue", xid_action="UNKNOWN")
        return out, CLASS_SEVERITY[cls]


CPER_SEVERITY = {"corrected": "info", "recoverable": "warning", "fatal": "critical"}
EDAC_CPER = {"CE": "corrected", "UE": "fatal"}


def cper_labels(labels: dict) -> tuple[dict[str, str], str | None]:
    """CPER / EDAC severity -> labels (cper_severity, condition) and the event severity."""
    sev = labels.get("cper_severity") or EDAC_CPER.get(labels.get("edac_type", ""))
    if not sev:
        return {}, None
    out = {"cper_severity": sev}
    if sev == "fatal":
        out["condition"] = "CperHardwareErrorFatal"
    return out, CPER_SEVERITY[sev]
