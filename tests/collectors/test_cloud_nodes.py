"""Instance -> node mapping: providerID shapes, node files, and the official Kubernetes client against a local API server."""

from __future__ import annotations

import asyncio
import contextlib

import orjson
import pytest
import yaml
from aiohttp import web

from collectors.cloud.nodes import NodeMap, instance_of, kubernetes_lister, load_node_files
from core.yamlconfig import ConfigError
from tests.realtools import serve_app

NODES_DIR = "openshift-must-gather-events/must-gather-aws/cluster-scoped-resources/core/nodes"
RECORDED = {
    "i-04c3029e207ee2de8": "ip-10-0-129-220.ec2.internal",
    "i-0ff943b959e44c16f": "ip-10-0-151-183.ec2.internal",
    "i-064a730035a9355cb": "ip-10-0-187-218.ec2.internal",
    "i-031c2da9689a6eff3": "ip-10-0-189-142.ec2.internal",
    "i-0bb916cc32a8034eb": "ip-10-0-195-177.ec2.internal",
    "i-06b5efb646a7d666a": "ip-10-0-254-204.ec2.internal",
}


@pytest.mark.parametrize("provider_id, instance", [
    ("aws:///us-east-1b/i-04c3029e207ee2de8", "i-04c3029e207ee2de8"),
    ("aws:///i-04c3029e207ee2de8", "i-04c3029e207ee2de8"),
    ("cn-hangzhou.i-bp1ecr5go2go", "i-bp1ecr5go2go"),
    ("alicloud://cn-beijing.i-2ze0abcdef", "i-2ze0abcdef"),
    ("aws:///us-east-1b/fargate-ip-10-0-1-1", None),
    ("gce://project/us-central1-a/vm-1", None),
    ("kind://docker/kind/kind-control-plane", None),
    ("", None),
])
def test_instance_of_provider_id(provider_id, instance):
    assert instance_of(provider_id) == instance


def test_recorded_node_objects(data_dir, tmp_path):
    assert load_node_files([data_dir / NODES_DIR]) == RECORDED
    plain = tmp_path / "map.yaml"
    plain.write_text("i-0abc12345: node-a\ncn-hangzhou.i-bp1xyz: node-b\naws:///us-east-1a/i-0def67890: node-c\n")
    assert load_node_files([plain]) == {"i-0abc12345": "node-a", "i-bp1xyz": "node-b", "i-0def67890": "node-c"}


def test_bad_node_files_are_all_reported(tmp_path):
    """Read by the strict config loader: every problem of every file, at its line and key (a duplicate key was taken,
    the last winning; only the first bad entry was said, without a line; a non-UTF-8 file was not named)."""
    (tmp_path / "a.yaml").write_text("i-0abc12345: [not, a, name]\ni-0def: 3\nbogus key: node\n")
    (tmp_path / "b.yaml").write_text("key: : :\n")
    (tmp_path / "c.yaml").write_text("i-0abc: node-a\ni-0abc: node-b\n")
    (tmp_path / "d.yaml").write_bytes(b"i-0abc: \xff\n")
    (tmp_path / "e.yaml").write_text("kind: NodeList\nitems:\n  - x\n")
    (tmp_path / "f.yaml").write_text("- i-0abc\n")
    with pytest.raises(ConfigError) as err:
        load_node_files([tmp_path])
    assert err.value.errors == [
        f"{tmp_path / 'a.yaml'}:1: i-0abc12345: expected a node name, got [\"not\", \"a\", \"name\"]",
        f"{tmp_path / 'a.yaml'}:2: i-0def: expected a node name, got 3",
        f"{tmp_path / 'a.yaml'}:3: bogus key: expected an instance id (i-...) or a providerID as the key, got \"bogus key\"",
        f"{tmp_path / 'b.yaml'}:1: YAML syntax error: mapping values are not allowed in this context",
        f"{tmp_path / 'c.yaml'}:2: i-0abc: duplicate key \"i-0abc\" (first at line 1)",
        f"{tmp_path / 'd.yaml'}:1: cannot read: 'utf-8' codec can't decode byte 0xff in position 8: invalid start byte",
        f"{tmp_path / 'e.yaml'}:3: items[0]: expected a Node, got \"x\"",
        f"{tmp_path / 'f.yaml'}:1: expected a Node, a NodeList or a mapping {{instance id or providerID: node name}}, "
        "got [\"i-0abc\"]"]


@contextlib.asynccontextmanager
async def api_server(state: dict):
    """A local Kubernetes API answering GET /api/v1/nodes with ``state['nodes']`` (or ``state['status']``)."""
    async def list_nodes(request):
        if state.get("status", 200) != 200:
            return web.json_response({"kind": "Status", "code": state["status"]}, status=state["status"])
        body = {"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": state["nodes"]}
        return web.Response(body=orjson.dumps(body, default=str), content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/v1/nodes", list_nodes)
    async with serve_app(app) as root:
        yield root


def test_node_map_from_the_kubernetes_api(data_dir):
    from kubernetes import client

    nodes = [yaml.safe_load(f.read_text()) for f in sorted((data_dir / NODES_DIR).glob("*.yaml"))]
    state = {"nodes": []}
    ticks = [0.0]

    async def run():
        async with api_server(state) as url:
            api = client.ApiClient(client.Configuration(host=url))
            nm = NodeMap({"i-0static01": "static-node"}, kubernetes_lister(api), refresh=300, min_interval=30,
                         clock=lambda: ticks[0])
            steps = [nm.due(missing=False)]
            await asyncio.to_thread(nm.relist)  # the cluster has no nodes yet
            steps.append(nm.snapshot())
            state["nodes"] = nodes  # nodes join
            ticks[0] = 10.0
            steps.append((nm.due(missing=False), nm.due(missing=True)))  # too soon even for a miss
            ticks[0] = 31.0
            steps.append((nm.due(missing=False), nm.due(missing=True)))  # a miss may re-list now
            await asyncio.to_thread(nm.relist)
            steps.append(nm.snapshot())
            state["status"] = 500  # the API fails: the last good map stays
            ticks[0] = 400.0
            steps.append(nm.due(missing=False))
            await asyncio.to_thread(nm.relist)
            steps.append((nm.snapshot(), nm.errors))
            api.close()
            return steps

    steps = asyncio.run(run())
    assert steps == [
        True,
        {"i-0static01": "static-node"},
        (False, False),
        (False, True),
        RECORDED | {"i-0static01": "static-node"},
        True,
        (RECORDED | {"i-0static01": "static-node"}, 1),
    ]


def test_requests_that_all_saw_a_stale_map_list_once():
    calls = []
    nm = NodeMap(lister=lambda: calls.append(1) or {"i-0abc12345": "n1"}, refresh=300, min_interval=30,
                 clock=lambda: 1000.0)
    assert nm.due(missing=False)
    nm.relist(False)
    nm.relist(False)  # a second request that checked before the first listing finished
    nm.relist(True)
    assert (len(calls), nm.snapshot()) == (1, {"i-0abc12345": "n1"})


def test_an_api_server_that_never_answers_is_asked_once(tmp_path):
    """kubesight's one ApiClient (collectors.kubernetes.api.api_client) does not retry a read timeout underneath:
    urllib3's default asked 4 times, so `collect cloud --kubernetes --check` waited 4 x 10 s on such a server."""
    import socket
    import threading

    from kubernetes import client
    from urllib3.exceptions import MaxRetryError, ReadTimeoutError

    from collectors.kubernetes.api import api_client

    srv = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def accept():
        with contextlib.suppress(OSError):
            while True:
                accepted.append(srv.accept()[0])  # kept open, never answered

    threading.Thread(target=accept, daemon=True).start()
    kc = tmp_path / "kubeconfig"
    kc.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{srv.getsockname()[1]}"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "t"}}]}))
    core = client.CoreV1Api(api_client(str(kc)))
    try:
        with pytest.raises((ReadTimeoutError, MaxRetryError)):
            core.list_node(_request_timeout=0.5)
        assert len(accepted) == 1
    finally:
        srv.close()
        for c in accepted:
            c.close()
