"""Notification bodies: Alertmanager's webhook v4 JSON, a Slack message, a DingTalk markdown message.

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
    """Alertmanager's webhook payload, version 4, plus ``dedupKey`` (stable per notification)."""
    alerts = note["alerts"]
    kept = alerts[:max_alerts] if max_alerts else alerts
    return {
        "version": "4",
        "groupKey": note["groupKey"],
        "truncatedAlerts": len(alerts) - len(kept),
        "status": note["status"],
        "receiver": note["receiver"],
        "groupLabels": note["groupLabels"],
        "commonLabels": _common([a["labels"] for a in alerts]),
        "commonAnnotations": _common([a.get("annotations") or {} for a in alerts]),
        "externalURL": external_url,
        "alerts": [_alert(a) for a in kept],
        "dedupKey": note["id"],
    }


def title(note: dict) -> str:
    firing = sum(a["status"] == "firing" for a in note["alerts"])
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


def slack(note: dict, channel: str = "", username: str = "kubesight") -> dict:
    """A Slack incoming-webhook message (one attachment; red while firing, green when resolved)."""
    text = "\n".join(_line(a) for a in note["alerts"])
    body = {
        "username": username,
        "attachments": [{"color": "danger" if note["status"] == "firing" else "good", "title": title(note),
                         "text": text, "fallback": f"{title(note)}\n{text}"}],
    }
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
