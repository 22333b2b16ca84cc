"""The metrics collector's YAML config: targets, relabelling, limits, discovery, remote-write.

Every error is fatal at load and names the file, line and YAML path, all errors at once:

>>> import tempfile, os
>>> with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
...     _ = fh.write("targets:\\n  - job: api\\n    url: http://a:1/metrics\\n    timeout: 99s\\n    interval: 10s\\n"
...                  "    relabel:\\n      - {action: keep, source_labels: [__name__], regex: 'a(('}\\n")
>>> load(fh.name)
Traceback (most recent call last):
...
core.yamlconfig.ConfigError: ...yaml:4: targets[0].timeout: timeout 1m39s is longer than interval 10s
...yaml:7: targets[0].relabel[0].regex: invalid regex 'a((': missing ): a((
>>> os.unlink(fh.name)
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core import yamlconfig
from core.durations import Duration, format_duration, parse_duration
from core.httpauth import Authorization, BasicAuth
from core.matchers import RegexError, full_match

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Relabel(_Model):
    """Keep or drop samples whose joined ``source_labels`` fully match ``regex`` (anchored)."""

    action: Literal["keep", "drop"]
    source_labels: list[str] = Field(default_factory=lambda: ["__name__"], min_length=1)
    separator: str = ";"
    regex: str

    @field_validator("regex")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            full_match(v)  # Go's syntax, as Prometheus reads a relabel regex (RE2: [[:digit:]] yes, lookahead no)
        except RegexError as exc:
            raise ValueError(f"invalid regex {v!r}: {exc}") from None
        return v

    @field_validator("source_labels")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        bad = [n for n in v if n != "__name__" and not _LABEL_NAME.match(n)]
        if bad:
            raise ValueError(f"invalid label name(s) {bad}")
        return v


class TLS(_Model):
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False

    @model_validator(mode="after")
    def _pair(self):
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file go together")
        return self


class Limits(_Model):
    interval: Duration = Field(30.0, gt=0)  # 0 scraped as fast as the loop could (thousands a second)
    timeout: Duration = Field(10.0, gt=0)
    max_bytes: int = Field(16 * 2**20, ge=1024, description="a larger page fails the scrape (up=0)")
    max_series: int = Field(50_000, ge=1, description="a page with more series fails the scrape (up=0)")


class Target(_Model):
    job: str = Field(min_length=1)
    url: str = Field(pattern=r"^https?://[^\s/]+(/\S*)?$")
    interval: Duration | None = Field(None, gt=0)
    timeout: Duration | None = Field(None, gt=0)
    max_bytes: int | None = Field(None, ge=1024)
    max_series: int | None = Field(None, ge=1)
    bearer_token: str | None = None
    bearer_token_file: str | None = None
    basic_auth: BasicAuth | None = None
    authorization: Authorization | None = None
    tls: TLS = Field(default_factory=TLS)
    labels: dict[str, str] = Field(default_factory=dict, description="added to every sample of the target")
    honor_labels: bool = False
    honor_timestamps: bool = True
    relabel: list[Relabel] = Field(default_factory=list)

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict) -> dict:
        bad = [n for n in v if not _LABEL_NAME.match(n)]
        if bad:
            raise ValueError(f"invalid label name(s) {bad}")
        return v

    @model_validator(mode="after")
    def _token(self):
        # prometheus/common's HTTPClientConfig checks, in its words; a URL's userinfo is basic auth too (aiohttp
        # refuses a request with both it and an Authorization header)
        if self.bearer_token and self.bearer_token_file:
            raise ValueError("bearer_token and bearer_token_file are exclusive")
        b, a = self.basic_auth, self.authorization
        if b is not None and b.password and b.password_file:
            raise ValueError("at most one of basic_auth password & password_file must be configured")
        if a is not None:
            if a.credentials and a.credentials_file:
                raise ValueError("at most one of authorization credentials & credentials_file must be configured")
            a.type = a.type.strip() or "Bearer"
            if a.type.lower() == "basic":
                raise ValueError('authorization type cannot be set to "basic", use "basic_auth" instead')
        given = [n for n, on in (("basic_auth", b is not None), ("authorization", a is not None),
                                 ("bearer_token", bool(self.bearer_token or self.bearer_token_file)),
                                 ("userinfo in url", "@" in urlsplit(self.url).netloc)) if on]
        if len(given) > 1:
            raise ValueError(f"at most one of basic_auth, authorization, bearer_token & userinfo in url must be "
                             f"configured (got {' & '.join(given)})")
        return self


class Kubernetes(_Model):
    """Discovery of the usual targets through the Kubernetes API (see discovery.py)."""

    enabled: bool = False
    kubeconfig: str | None = Field(None, description="None = in-cluster service account")
    refresh: Duration = Field(60.0, gt=0)  # 0 would ask the API server for the targets in a busy loop
    roles: list[Literal["apiserver", "kubelet", "cadvisor", "etcd", "scheduler", "controller-manager",
                        "node-exporter", "kube-state-metrics", "dcgm-exporter", "coredns", "annotated"]] = Field(
        default_factory=lambda: ["apiserver", "kubelet", "cadvisor", "etcd", "scheduler", "controller-manager",
                                 "node-exporter", "kube-state-metrics", "dcgm-exporter", "coredns", "annotated"])
    namespaces: list[str] = Field(default_factory=list, description="empty = all namespaces")
    labels: dict[str, str] = Field(default_factory=dict, description="added to every discovered target")
    relabel: list[Relabel] = Field(default_factory=list)
    bearer_token_file: str | None = Field("/var/run/secrets/kubernetes.io/serviceaccount/token",
                                          description="sent to https targets (apiserver, kubelet, control plane)")
    tls: TLS = Field(default_factory=TLS, description="for https targets; no ca_file = the service-account CA "
                                                       "when running in a pod, else the system CAs")
    kubelet_tls: TLS = Field(default_factory=lambda: TLS(insecure_skip_verify=True),
                             description="kubelet serving certificates are usually self-signed")


class Discovery(_Model):
    kubernetes: Kubernetes = Field(default_factory=Kubernetes)


class RemoteWrite(_Model):
    enabled: bool = True
    host: str = Field("127.0.0.1", description="a non-loopback address needs authentication (bearer_token_file "
                      "or the web config's basic_auth_users) or insecure_listen")
    port: int = Field(9201, ge=0, le=65535)
    path: str = Field("/api/v1/write", pattern=r"^/\S*$")
    max_bytes: int = Field(32 * 2**20, ge=1024, description="decompressed request size cap")
    labels: dict[str, str] = Field(default_factory=dict, description="added to every sample that does not carry "
                                   "the label already (as Prometheus' external_labels: the sender's own value wins)")
    bearer_token_file: str | None = Field(None, description="when set, senders must present one of its lines "
                                          "(Prometheus remote_write authorization.credentials_file)")
    web_config: str | None = Field(None, description="web config (TLS, basic_auth_users: Prometheus remote_write "
                                   "basic_auth) of this listener; None = settings' web_config")
    insecure_listen: bool = Field(False, description="accept samples on a non-loopback address without "
                                  "authentication")
    kafka_timeout: Duration = Field(10.0, gt=0, description="how long to wait for Kafka's acks before answering 503")


class MetricsConfig(_Model):
    defaults: Limits = Field(default_factory=Limits)
    targets: list[Target] = Field(default_factory=list)
    discovery: Discovery = Field(default_factory=Discovery)
    remote_write: RemoteWrite = Field(default_factory=RemoteWrite)


def _duplicate_targets(data: dict) -> list[tuple[tuple, str]]:
    """A target listed twice (the same job and URL), said at the second one's line (loc, message)."""
    out, seen = [], {}
    targets = data.get("targets") or []
    for i, raw in enumerate(targets if isinstance(targets, list) else []):
        if isinstance(raw, dict) and isinstance(raw.get("job"), str) and isinstance(raw.get("url"), str):
            first = seen.setdefault((raw["job"], raw["url"]), i)
            if first != i:  # the URL as every message shows it: a password in it as xxxxx
                from collectors.metrics.scrape import redacted

                out.append((("targets", i), f"target {raw['job']} {redacted(raw['url'])} listed twice "
                                            f"(first: targets[{first}])"))
    return out


def _secs_or_none(raw, key: str, default):
    try:
        v = raw.get(key) if isinstance(raw, dict) else None
        return default if v is None else parse_duration(v)
    except ValueError:
        return None


def _interval_checks(data: dict) -> list[tuple[tuple, str]]:
    """timeout <= interval for the defaults and each target, read from the raw values (loc, message)."""
    out = []
    d = data.get("defaults") or {}
    div, dto = _secs_or_none(d, "interval", 30.0), _secs_or_none(d, "timeout", 10.0)
    if div is not None and dto is not None and dto > div:
        out.append((("defaults", "timeout"), f"timeout {format_duration(dto)} is longer than interval {format_duration(div)}"))
    targets = data.get("targets") or []
    for i, raw in enumerate(targets if isinstance(targets, list) else []):
        if not isinstance(raw, dict) or not ({"interval", "timeout"} & raw.keys()):
            continue  # uses the defaults, checked above
        iv, to = _secs_or_none(raw, "interval", div), _secs_or_none(raw, "timeout", dto)
        if iv is not None and to is not None and to > iv:
            where = "timeout" if isinstance(raw, dict) and "timeout" in raw else "interval"
            out.append((("targets", i, where), f"timeout {format_duration(to)} is longer than interval {format_duration(iv)}"))
    return out


def _named_files(data: dict) -> list[tuple[tuple, object, bool]]:
    """(YAML path, value, read as text: a token file) of every file the config names.

    Files of a disabled discovery or remote-write section are left out: nothing reads them."""
    out: list[tuple[tuple, object, bool]] = []

    def add(raw, base: tuple, keys: tuple, text: bool = False) -> None:
        if isinstance(raw, dict):
            out.extend((base + (k,), raw[k], text) for k in keys if raw.get(k) is not None)

    targets = data.get("targets") or []
    for i, raw in enumerate(targets if isinstance(targets, list) else []):
        add(raw, ("targets", i), ("bearer_token_file",), text=True)
        for key, name in (("basic_auth", "password_file"), ("authorization", "credentials_file")):
            add(raw.get(key) if isinstance(raw, dict) else None, ("targets", i, key), (name,), text=True)
        add(raw.get("tls") if isinstance(raw, dict) else None, ("targets", i, "tls"), _TLS_FILES)
    disc = data.get("discovery")
    k8s = disc.get("kubernetes") if isinstance(disc, dict) else None
    if isinstance(k8s, dict) and k8s.get("enabled") is True:
        base = ("discovery", "kubernetes")
        add(k8s, base, ("kubeconfig",))
        add(k8s, base, ("bearer_token_file",), text=True)
        for key in ("tls", "kubelet_tls"):
            add(k8s.get(key), base + (key,), _TLS_FILES)
    rw = data.get("remote_write")
    if isinstance(rw, dict) and rw.get("enabled", True) is not False:
        add(rw, ("remote_write",), ("bearer_token_file",), text=True)
        add(rw, ("remote_write",), ("web_config",))
    return out


_TLS_FILES = ("ca_file", "cert_file", "key_file")


def _file_checks(data: dict) -> list[tuple[tuple, str]]:
    """Every file the config names that cannot be read, at its key, as promtool check config does (else a scrape,
    the discovery or the remote-write intake fails later, far from the line that named it).  The remote-write
    token file must also hold a token: a blank one would let every sender in."""
    from core.webconfig import read_tokens

    out = []
    for loc, path, text in _named_files(data):
        if not isinstance(path, str) or not path:
            continue  # not a path: the schema says so
        why = yamlconfig.unreadable(path, text=text)
        why = None if why is None else f"cannot read {path}: {why}"
        if why is None and loc == ("remote_write", "bearer_token_file"):
            try:
                read_tokens(path)
            except yamlconfig.ConfigError as exc:
                why = str(exc).removeprefix(f"{path}: ")
        if why is not None:
            out.append((loc, why))
    return out


def load(path: str, files: bool = False) -> MetricsConfig:
    """Read and validate; raises ``ConfigError`` listing every problem with file, line and YAML path.  ``files``: every
    file it names (TLS, token files, kubeconfig, web config) must be readable too (the collector about to run; a
    config meant for a pod, such as the example reading the service account's CA, loads anywhere without it)."""
    return yamlconfig.load(path, MetricsConfig,
                           check=lambda data: _interval_checks(data) + _duplicate_targets(data)
                           + (_file_checks(data) if files else []))
