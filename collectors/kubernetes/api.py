"""The official ``kubernetes`` client, used raw: paged lists, streamed watches, object reads as dicts.

Responses are read with ``_preload_content=False`` and parsed with orjson: no model
deserialisation (slow, and it hides malformed objects that must be dead-lettered instead).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson


class Gone(Exception):
    """The resourceVersion is too old (HTTP 410, or a watch ERROR event with code 410): re-list."""


@dataclass(frozen=True)
class Stream:
    name: str  # events | events.k8s.io | nodes | pods | namespaces
    api: str  # CoreV1Api | EventsV1Api
    method: str  # list_*_for_all_namespaces | list_node | list_namespace
    kind: str  # the object kind


STREAMS = {
    "events": Stream("events", "CoreV1Api", "list_event_for_all_namespaces", "Event"),
    "events.k8s.io": Stream("events.k8s.io", "EventsV1Api", "list_event_for_all_namespaces", "Event"),
    "nodes": Stream("nodes", "CoreV1Api", "list_node", "Node"),
    "pods": Stream("pods", "CoreV1Api", "list_pod_for_all_namespaces", "Pod"),
    # for their teams only: a namespace relabelled reaches the owners topic at once (Collector._namespace)
    "namespaces": Stream("namespaces", "CoreV1Api", "list_namespace", "Namespace"),
}

# kind -> (api class, read method, namespaced)
READERS = {
    "Namespace": ("CoreV1Api", "read_namespace", False),
    "Pod": ("CoreV1Api", "read_namespaced_pod", True),
    "ReplicaSet": ("AppsV1Api", "read_namespaced_replica_set", True),
    "Deployment": ("AppsV1Api", "read_namespaced_deployment", True),
    "StatefulSet": ("AppsV1Api", "read_namespaced_stateful_set", True),
    "DaemonSet": ("AppsV1Api", "read_namespaced_daemon_set", True),
    "Job": ("BatchV1Api", "read_namespaced_job", True),
    "CronJob": ("BatchV1Api", "read_namespaced_cron_job", True),
    "ReplicationController": ("CoreV1Api", "read_namespaced_replication_controller", True),
}


@dataclass(frozen=True)
class OwnerKind:
    """A custom resource's kind read to resolve owners, opted into (``--owner-kind``): no role reads every CRD, so
    only the kinds an operator lists and grants ``get`` on are read; namespaced ones (an owner of pods is).

    >>> OwnerKind.parse("argoproj.io/v1alpha1/rollouts=Rollout")
    OwnerKind(group='argoproj.io', version='v1alpha1', plural='rollouts', kind='Rollout')
    >>> OwnerKind.parse("apps/v1/deployments=Deployment")
    Traceback (most recent call last):
    ValueError: Deployment is read already (apps/v1/deployments=Deployment)
    """

    group: str
    version: str
    plural: str
    kind: str

    @classmethod
    def parse(cls, text: str) -> OwnerKind:
        """``GROUP/VERSION/PLURAL=Kind``: the URL path of the resource, and the kind ownerReferences name."""
        resource, sep, kind = text.strip().partition("=")
        parts = [p.strip() for p in resource.split("/")]
        if not sep or len(parts) != 3 or not all(parts) or not kind.strip():
            raise ValueError(f"expected GROUP/VERSION/PLURAL=Kind, e.g. argoproj.io/v1alpha1/rollouts=Rollout, "
                             f"not {text!r}")
        if kind.strip() in READERS:  # a built-in kind: its reader (and its role rule) are kubesight's own
            raise ValueError(f"{kind.strip()} is read already ({text.strip()})")
        return cls(parts[0], parts[1], parts[2], kind.strip())


def api_client(kubeconfig: str | None = None, context: str | None = None, in_cluster: bool | None = False):
    """The one way kubesight makes an ApiClient: from the in-cluster service account (``in_cluster``), a kubeconfig
    file (default ~/.kube/config), or with ``in_cluster=None`` the service account when there is one, else the
    kubeconfig.

    A request that times out reading its answer is not retried underneath: urllib3's default retried it three
    times, so a 10 s timeout waited 40 s on an API server that accepts connections and never answers. Connection
    errors are still retried (three times), and each caller's own loop retries the rest at its pace."""
    from kubernetes import client, config
    from urllib3.util.retry import Retry

    cfg = client.Configuration()
    if in_cluster is None and not kubeconfig:
        try:
            config.load_incluster_config(client_configuration=cfg)
        except config.ConfigException:
            config.load_kube_config(context=context, client_configuration=cfg)
    elif in_cluster:
        config.load_incluster_config(client_configuration=cfg)
    else:
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
    cfg.retries = Retry(total=3, read=0, redirect=0)
    return client.ApiClient(cfg)


class Api:
    """List, watch and read through one ApiClient."""

    def __init__(self, api_client, timeout: float = 30.0):
        from kubernetes import client

        self.client = api_client
        self.timeout = timeout
        self._apis = {n: getattr(client, n)(api_client) for n in ("CoreV1Api", "EventsV1Api", "AppsV1Api", "BatchV1Api",
                                                                  "CustomObjectsApi")}

    def _call(self, stream: Stream, **kw):
        from kubernetes.client.exceptions import ApiException

        try:
            resp = getattr(self._apis[stream.api], stream.method)(_preload_content=False, **kw)
        except ApiException as exc:
            if exc.status == 410:
                raise Gone(f"{stream.name}: {exc.reason}") from None
            raise
        status = getattr(resp, "status", 200)
        if status == 410:
            resp.release_conn()
            raise Gone(f"{stream.name}: HTTP 410 {_message(resp)}")
        if not 200 <= status <= 299:
            msg = _message(resp)
            resp.release_conn()
            raise ApiException(status=status, reason=f"{stream.name}: {msg}")
        return resp

    def list(self, stream: Stream, page: int = 500) -> tuple[list, str]:
        """All objects and the list's resourceVersion (paged with limit/continue, one snapshot)."""
        items: list = []
        token = None
        rv = ""
        while True:
            kw = {"limit": page, "_request_timeout": self.timeout}
            if token:
                kw["_continue"] = token
            resp = self._call(stream, **kw)
            body = orjson.loads(resp.data)
            meta = body.get("metadata") or {}
            rv = rv or str(meta.get("resourceVersion") or "")
            got = body.get("items") or []
            if not isinstance(got, list):
                raise ValueError(f"{stream.name}: list items is not a list")
            items.extend(got)
            token = meta.get("continue")
            if not token:
                return items, rv

    def resource_version(self, stream: Stream) -> str:
        """The collection's current resourceVersion, cheaply: a list of one object (a consistent read)."""
        resp = self._call(stream, limit=1, _request_timeout=self.timeout)
        meta = orjson.loads(resp.data).get("metadata") or {}
        return str(meta.get("resourceVersion") or "")

    def watch(self, stream: Stream, rv: str, timeout_seconds: int = 300):
        """The open watch response (urllib3, streamed): read it with ``lines(resp)``."""
        return self._call(stream, watch=True, resource_version=rv, allow_watch_bookmarks=True,
                          timeout_seconds=timeout_seconds, _request_timeout=(self.timeout, timeout_seconds + 30))

    def read(self, kind: str, ns: str, name: str, custom: OwnerKind | None = None) -> dict | None:
        """One object as a dict; None if it does not exist (or kubesight may not read that kind).

        ``custom``: how to read a kind outside ``READERS`` (a CRD's, ``--owner-kind``)."""
        from kubernetes.client.exceptions import ApiException

        if custom is not None:
            call = self._apis["CustomObjectsApi"].get_namespaced_custom_object
            args: tuple = (custom.group, custom.version, ns, custom.plural, name)
        elif kind in READERS:
            api, method, namespaced = READERS[kind]
            call = getattr(self._apis[api], method)
            args = (name, ns) if namespaced else (name,)
        else:
            return None
        try:
            resp = call(*args, _preload_content=False, _request_timeout=self.timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        if resp.status == 404:
            return None
        if not 200 <= resp.status <= 299:
            raise ApiException(status=resp.status, reason=f"read {kind} {ns}/{name}: {_message(resp)}")
        return orjson.loads(resp.data)


def _message(resp) -> str:
    try:
        body = orjson.loads(resp.data)
        return str(body.get("message") or body)[:300]
    except Exception:
        return "(no readable body)"


def lines(resp):
    """Lines of a watch response, as bytes (the client's own chunk splitter)."""
    from kubernetes.watch.watch import iter_resp_lines

    for line in iter_resp_lines(resp):
        if line:
            yield line
