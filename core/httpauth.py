"""HTTP client credentials as Prometheus and Alertmanager write them (prometheus/common's ``authorization`` and
``basic_auth``), and the one reader of their ``*_file`` secrets: the receivers' ``http_config`` (``alerts/``) and the
scrape targets (``collectors/metrics/``) take the same blocks, so both live here, below both.

>>> BasicAuth(username="alice", password_file="/etc/pw").password is None
True
>>> Authorization().type
'Bearer'
>>> secret("s3cret", "/nonexistent")
's3cret'
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Authorization(_Strict):
    """``Authorization: <type> <credentials>`` on every request (Alertmanager's ``http_config.authorization``)."""

    type: str = "Bearer"
    credentials: str | None = None
    credentials_file: str | None = None


class BasicAuth(_Strict):
    username: str = ""
    password: str | None = None
    password_file: str | None = None


def secret(value: str | None, path: str | None) -> str:
    """The value, or the stripped content of the file at ``path`` (``*_file`` keys are read at load)."""
    return value if value is not None else Path(path).read_text().strip()
