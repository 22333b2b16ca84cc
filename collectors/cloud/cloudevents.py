"""CloudEvents 1.0 over HTTP: structured mode (``application/cloudevents+json``), batch mode, binary mode (``ce-`` headers).

Each form is reduced to ``(attributes, data)``; the intake decides what the data is.

>>> structured({"specversion": "1.0", "id": "1", "source": "acs.ecs", "type": "ecs:Instance:StateChange",
...             "data": {"state": "Running"}})
({'specversion': '1.0', 'id': '1', 'source': 'acs.ecs', 'type': 'ecs:Instance:StateChange'}, {'state': 'Running'})
>>> binary({"ce-specversion": "1.0", "ce-id": "1", "ce-source": "acs.ecs", "ce-type": "ecs:Instance:StateChange",
...         "Content-Type": "application/json"}, b'{"state": "Running"}')[1]
{'state': 'Running'}
"""

from __future__ import annotations

import base64
from urllib.parse import unquote

import orjson

from collectors.cloud.event import PayloadError

REQUIRED = ("specversion", "id", "source", "type")
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


def _check(attrs: dict, where: str) -> dict:
    for name in REQUIRED:
        v = attrs.get(name)
        if not isinstance(v, str) or not v:
            raise PayloadError(f"{where}: CloudEvent attribute {name!r} missing or not a string")
    if attrs["specversion"] != "1.0":
        raise PayloadError(f"{where}: unsupported CloudEvents specversion {attrs['specversion']!r} (expected 1.0)")
    return attrs


def _json_data(raw: bytes, content_type: str, where: str):
    if content_type and "json" not in content_type:
        raise PayloadError(f"{where}: data must be JSON, got content type {content_type!r}")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"{where}: data is not valid JSON ({exc})") from None


def is_structured(d) -> bool:
    return isinstance(d, dict) and "specversion" in d


def structured(d: dict, where: str = "CloudEvent") -> tuple[dict, object]:
    """A structured-mode CloudEvent (a JSON object) -> (attributes, data)."""
    attrs = _check({k: v for k, v in d.items() if k not in ("data", "data_base64")}, where)
    if "data_base64" in d:
        try:
            raw = base64.b64decode(d["data_base64"], validate=True)
        except (ValueError, TypeError):
            raise PayloadError(f"{where}: data_base64 is not base64") from None
        return attrs, _json_data(raw, attrs.get("datacontenttype", ""), where)
    return attrs, d.get("data")


def is_binary(headers) -> bool:
    return any(k.lower() == "ce-specversion" for k in headers)


def binary(headers, body: bytes) -> tuple[dict, object]:
    """A binary-mode CloudEvent: attributes from ``ce-*`` headers (percent-decoded), data = the body."""
    attrs, content_type = {}, ""
    for k, v in headers.items():
        low = k.lower()
        if low.startswith("ce-"):
            try:
                attrs[low[3:]] = unquote(v.encode("utf-8", "surrogateescape").decode("utf-8"), errors="strict")
            except UnicodeError:  # raw bytes that are not UTF-8 (HTTP servers hand them over as surrogates)
                raise PayloadError(f"CloudEvent (binary mode): header {k} is not UTF-8 text") from None
        elif low == "content-type":
            content_type = v
    _check(attrs, "CloudEvent (binary mode)")
    if content_type:
        attrs["datacontenttype"] = content_type
    return attrs, _json_data(body, content_type, "CloudEvent (binary mode)") if body else None
