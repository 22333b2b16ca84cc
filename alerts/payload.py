"""Notification bodies: Alertmanager's webhook v4 JSON, Slack, DingTalk, PagerDuty Events v2, Opsgenie, Teams, email.

Message text (email subject and body, PagerDuty's summary, Opsgenie's message and description,
Teams' title and text) comes from one template mechanism, ``MessageTemplate``: Python's
``string.Template`` over a fixed set of fields, overridable per receiver integration.

>>> note = {"id": "k1", "receiver": "ops", "groupKey": '{}:{alertname="A"}', "groupLabels": {"alertname": "A"},
...         "status": "firing", "alerts": [{"labels": {"alertname": "A", "pod": "p"}, "annotations": {},
...         "status": "firing", "startsAt": "2021-08-03T10:00:00.000Z", "endsAt": None, "fingerprint": "f1",
...         "generatorURL": ""}]}
>>> w = webhook(note, "http://ks")
>>> w["version"], w["status"], w["commonLabels"], w["alerts"][0]["endsAt"], w["dedupKey"]
('4', 'firing', {'alertname': 'A', 'pod': 'p'}, '0001-01-01T00:00:00Z', 'k1')
>>> slack(note, "#ops")["attachments"][0]["title"]
'[FIRING:1] A'
"""

from __future__ import annotations

ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt for an alert still firing


def _common(dicts: list[dict]) -> dict:
    if not dicts:
        return {}
    common = dict(dicts[0])
    for d in dicts[1:]:
        for k in [k for k, v in common.items() if d.get(k) != v]:
            del common[k]
    return common


def _alert(a: dict) -> dict:
    return {
        "status": a["status"],
        "labels": a["labels"],
        "annotations": a.get("annotations") or {},
        "startsAt": a["startsAt"],
        "endsAt": a.get("endsAt") or ZERO_TIME,
        "generatorURL": a.get("generatorURL") or "",
        "fingerprint": a["fingerprint"],
    }


def webhook(note: dict, external_url: str, max_alerts: int = 0) -> dict:
    """Alertmanager's webhook payload, version 4, plus ``dedupKey`` (stable per notification).  ``truncatedAlerts``
    also counts the alerts a notification too large for a Kafka record left out (its own ``truncatedAlerts``,
    ``alerts.grouping.fit``; ``firing_only`` recounts it for an integration without send_resolved)."""
    alerts = note["alerts"]
    kept = alerts[:max_alerts] if max_alerts else alerts  # truncated first: the fields below are of what is sent
    return {
        "version": "4",
        "groupKey": group_key(note),
        "truncatedAlerts": note.get("truncatedAlerts", 0) + len(alerts) - len(kept),
        "status": "firing" if any(a["status"] == "firing" for a in kept) else "resolved",
        "receiver": note["receiver"],
        "groupLabels": note["groupLabels"],
        "commonLabels": _common([a["labels"] for a in kept]),
        "commonAnnotations": _common([a.get("annotations") or {} for a in kept]),
        "externalURL": external_url,
        "alerts": [_alert(a) for a in kept],
        "dedupKey": note["id"],
    }


def counts(note: dict) -> tuple[int, int]:
    """(firing, resolved) alerts of the notification: of the group, when a cut left some out (``numFiring``)."""
    if "numFiring" in note:
        return note["numFiring"], note["numResolved"]
    firing = sum(a["status"] == "firing" for a in note["alerts"])
    return firing, len(note["alerts"]) - firing


def firing_only(note: dict) -> dict:
    """``note`` without its resolved alerts (an integration without send_resolved); a cut note then counts only the
    firing alerts it left out, as Alertmanager filters resolved alerts before its webhook truncates.

    >>> a = lambda st: {"status": st}
    >>> cut = {"alerts": [a("firing"), a("resolved")], "truncatedAlerts": 5, "numFiring": 4, "numResolved": 3}
    >>> n = firing_only(cut)
    >>> len(n["alerts"]), n["truncatedAlerts"], counts(n)
    (1, 3, (4, 0))
    """
    out = dict(note, alerts=[a for a in note["alerts"] if a["status"] == "firing"])
    if "truncatedAlerts" in note:
        out.update(truncatedAlerts=note["numFiring"] - len(out["alerts"]), numResolved=0)
    return out


def title(note: dict) -> str:
    firing = counts(note)[0]
    head = f"[FIRING:{firing}]" if note["status"] == "firing" else "[RESOLVED]"
    labels = " ".join(str(v) for _, v in sorted(note["groupLabels"].items()))
    return f"{head} {labels}".rstrip()


def _line(a: dict) -> str:
    ann = a.get("annotations") or {}
    what = ann.get("summary") or ann.get("description") or ann.get("message") or ""
    where = ", ".join(f"{k}={v}" for k, v in sorted(a["labels"].items()) if k not in ("alertname", "severity"))
    sev = a["labels"].get("severity", "")
    return f"{a['status'].upper()} {a['labels'].get('alertname', '')}{f' ({sev})' if sev else ''}: " \
           f"{what}{' ' if what else ''}[{where}]"


def slack(note: dict, channel: str = "", username: str = "kubesight", external_url: str = "") -> dict:
    """A Slack incoming-webhook message (one attachment; red while firing, green when resolved); the title links
    back to the receiver's alerts, as Alertmanager's ``slack.default.titlelink`` does."""
    from urllib.parse import quote_plus

    text = "\n".join(_line(a) for a in note["alerts"])
    att = {"color": "danger" if note["status"] == "firing" else "good", "title": title(note), "text": text,
           "fallback": f"{title(note)}\n{text}"}
    if external_url:  # {{ .ExternalURL }}/#/alerts?receiver={{ .Receiver | urlquery }} (Go's QueryEscape)
        att["title_link"] = f"{external_url}/#/alerts?receiver={quote_plus(note['receiver'])}"
    body = {"username": username, "attachments": [att]}
    if channel:
        body["channel"] = channel
    return body


def dingtalk(note: dict) -> dict:
    """A DingTalk robot markdown message."""
    lines = [f"### {title(note)}", ""] + [f"- {_line(a)}" for a in note["alerts"]]
    return {"msgtype": "markdown", "markdown": {"title": title(note), "text": "\n".join(lines)}}


def dingtalk_sign(url: str, secret: str, now_ms: int) -> str:
    """DingTalk's signed URL: ``timestamp`` and ``sign`` = base64(HMAC-SHA256(secret, ts + '\\n' + secret))."""
    import base64
    import hashlib
    import hmac
    from urllib.parse import quote_plus

    digest = hmac.new(secret.encode(), f"{now_ms}\n{secret}".encode(), hashlib.sha256).digest()
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}timestamp={now_ms}&sign={quote_plus(base64.b64encode(digest).decode())}"


# ---------------------------------------------------------------- message templates (one mechanism)

TEMPLATE_FIELDS = ("status", "title", "alerts", "receiver", "group", "count", "firing", "resolved", "external_url")


class _Fields(dict):
    def __missing__(self, key: str) -> str:
        return ""  # label_x / annotation_x absent from the group's common labels: empty, as Alertmanager renders


class MessageTemplate:
    """``$name`` / ``${name}`` fields filled from a notification; ``$$`` is a dollar; nothing else is evaluated.

    Fields: ``status`` (firing|resolved), ``title`` (``[FIRING:2] KubePodCrashLooping shop``), ``alerts``
    (one line per alert), ``receiver``, ``group`` (the group labels, ``k=v``), ``count``, ``firing``,
    ``resolved``, ``external_url``, ``label_NAME`` / ``annotation_NAME`` (a label or annotation common to
    every alert of the notification; empty when not common).

    >>> note = {"receiver": "ops", "groupLabels": {"alertname": "A"}, "status": "firing",
    ...         "alerts": [{"labels": {"alertname": "A", "pod": "p"}, "annotations": {"summary": "s"},
    ...                     "status": "firing"}]}
    >>> MessageTemplate("$title on ${label_pod}: $annotation_summary ($$1, $label_node)").render(note, "")
    '[FIRING:1] A on p: s ($1, )'
    >>> MessageTemplate("{{ .CommonLabels.pod }} $podname")
    Traceback (most recent call last):
    ...
    ValueError: unknown template field "$podname" (use $status, $title, $alerts, $receiver, $group, $count, \
$firing, $resolved, $external_url, $label_NAME, $annotation_NAME)
    """

    __slots__ = ("text", "_t")

    def __init__(self, text: str):
        import string

        self.text = text
        self._t = string.Template(text)
        if not self._t.is_valid():
            raise ValueError("invalid template: a $ must start a field ($name or ${name}); write $$ for a dollar")
        for name in self._t.get_identifiers():
            if name not in TEMPLATE_FIELDS and not (name.startswith(("label_", "annotation_"))
                                                    and name not in ("label_", "annotation_")):
                raise ValueError(f'unknown template field "${name}" (use '
                                 + ", ".join(f"${f}" for f in TEMPLATE_FIELDS) + ", $label_NAME, $annotation_NAME)")

    def render(self, note: dict, external_url: str) -> str:
        return self._t.substitute(fields(note, external_url))


def fields(note: dict, external_url: str) -> dict:
    alerts = note["alerts"]
    firing, resolved = counts(note)
    out = _Fields(status=note["status"], title=title(note), alerts="\n".join(_line(a) for a in alerts),
                  receiver=note["receiver"], count=str(firing + resolved), firing=str(firing),
                  resolved=str(resolved), external_url=external_url,
                  group=" ".join(f"{k}={v}" for k, v in sorted(note["groupLabels"].items())))
    for k, v in _common([a["labels"] for a in alerts]).items():
        out[f"label_{k}"] = v
    for k, v in _common([a.get("annotations") or {} for a in alerts]).items():
        out[f"annotation_{k}"] = v
    return out


def key_hash(key: str) -> str:
    """Alertmanager's ``Key.Hash()``: sha256 hex of the group key (PagerDuty's dedup_key, Opsgenie's alias)."""
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()


def group_key(note: dict) -> str:
    """The group key receivers see: Alertmanager's (``amGroupKey``, where kubesight's own carries a /N), else the
    notification's."""
    return note.get("amGroupKey") or note["groupKey"]


def _severity(note: dict, configured: str) -> str:
    if configured:
        return configured
    sev = _common([a["labels"] for a in note["alerts"]]).get("severity", "")
    return {"critical": "critical", "error": "error", "warning": "warning", "info": "info"}.get(sev, "error")


def pagerduty(note: dict, routing_key: str, summary: str, *, severity: str = "", source: str = "kubesight",
              client: str = "kubesight", client_url: str = "", component: str = "", group: str = "",
              class_: str = "", details: dict | None = None) -> dict:
    """A PagerDuty Events API v2 event: trigger while firing, resolve when the group is resolved."""
    body: dict = {"routing_key": routing_key, "dedup_key": key_hash(group_key(note)),
                  "event_action": "trigger" if note["status"] == "firing" else "resolve"}
    if note["status"] != "firing":
        return body
    firing = [a for a in note["alerts"] if a["status"] == "firing"]
    num_firing, num_resolved = counts(note)
    payload = {"summary": summary[:1024], "source": source, "severity": _severity(note, severity),
               "custom_details": {"firing": "\n".join(_line(a) for a in firing),
                                  "num_firing": num_firing, "num_resolved": num_resolved,
                                  **(details or {})}}
    for k, v in (("component", component), ("group", group), ("class", class_)):
        if v:
            payload[k] = v
    body.update(payload=payload, client=client, client_url=client_url)
    return body


def opsgenie(note: dict, message: str, description: str, *, priority: str = "", source: str = "kubesight",
             tags: list[str] | None = None, details: dict | None = None) -> dict:
    """An Opsgenie alert (POST /v2/alerts); ``alias`` = the group key's hash, so the close finds it."""
    body = {"message": message[:130], "alias": key_hash(group_key(note)), "description": description[:15000],
            "source": source, "details": {**_common([a["labels"] for a in note["alerts"]]), **(details or {})}}
    if tags:
        body["tags"] = tags
    if priority:
        body["priority"] = priority
    return body


def msteams(note: dict, title_text: str, text: str) -> dict:
    """A Microsoft Teams incoming-webhook MessageCard (red while firing, green when resolved)."""
    return {"@type": "MessageCard", "@context": "http://schema.org/extensions",
            "themeColor": "8C1A1A" if note["status"] == "firing" else "2DC72D",
            "summary": title_text, "title": title_text, "text": text}
