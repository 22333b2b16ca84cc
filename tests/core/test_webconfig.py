"""The web config (core.webconfig) on real HTTPS servers: TLS, client certificates, basic auth, refusing open writes."""

from __future__ import annotations

import base64
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

import bcrypt
import pytest

from collectors.metrics.remote_write import WriteRequest, encode
from core import webconfig
from core.broker import free_port
from core.settings import REPO
from core.telemetry import serve
from core.yamlconfig import ConfigError
from tests import tlsfiles

PASSWORD = "correct horse battery staple"
KUBESIGHT = [sys.executable, "-m", "kubesight.cli"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca = tlsfiles.ca(folder)
    return {"folder": folder, "ca": ca, "server": tlsfiles.signed(folder, ca, "server"),
            "client": tlsfiles.signed(folder, ca, "client", client=True)}


def _web_config(pki, *, client_auth: str = "NoClientCert") -> str:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    path = pki["folder"] / f"web-{client_auth}.yml"
    path.write_text(f"tls_server_config:\n  cert_file: {pki['server'].cert}\n  key_file: {pki['server'].key}\n"
                    f"  client_ca_file: {pki['ca'].cert}\n  client_auth_type: {client_auth}\n"
                    f"basic_auth_users:\n  alice: '{hashed}'\n")
    return str(path)


def _client_ctx(pki, cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki["ca"].cert))
    if cert:
        ctx.load_cert_chain(str(pki["client"].cert), str(pki["client"].key))
    return ctx


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _get(url: str, ctx: ssl.SSLContext, auth: str | None = None) -> int:
    req = urllib.request.Request(url, headers={"Authorization": auth} if auth else {})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_errors_name_the_file_line_and_path(tmp_path):
    bad = tmp_path / "web.yml"
    bad.write_text("tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n"
                   "  client_auth_type: RequireAndVerifyClientCert\n"
                   "basic_auth_users:\n  alice: plain-password\nhttp_server_confg: {}\n")
    with pytest.raises(ConfigError) as err:
        webconfig.load(bad)
    assert err.value.errors == [  # the files too, with the schema's problems: not only once those are fixed
        f"{bad}:2: tls_server_config.cert_file: no such file: /nonexistent.crt",
        f"{bad}:3: tls_server_config.key_file: no such file: /nonexistent.key",
        f"{bad}:4: tls_server_config.client_auth_type: RequireAndVerifyClientCert needs client_ca_file",
        f"{bad}:5: basic_auth_users: not a bcrypt hash for alice (make one with htpasswd -nBC 12 USER)",
        f"{bad}:7: http_server_confg: unknown key \"http_server_confg\" (did you mean \"tls_server_config\"?)",
    ]
    assert "plain-password" not in str(err.value)  # a password pasted in place of its hash is never echoed
    bad.write_text("tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n"
                   "  client_auth_type: RequireAndVerifyClientCert\n")
    with pytest.raises(ConfigError) as err:
        webconfig.load(bad)
    assert err.value.errors == [f"{bad}:2: tls_server_config.cert_file: no such file: /nonexistent.crt",
                                f"{bad}:3: tls_server_config.key_file: no such file: /nonexistent.key",
                                f"{bad}:4: tls_server_config.client_auth_type: RequireAndVerifyClientCert "
                                "needs client_ca_file"]


def test_missing_files_are_listed_with_a_schema_error_of_the_same_section(tmp_path):
    """A misspelt key (min_versio) made the section invalid, and the missing cert_file and key_file were said only
    after it was fixed: one problem per run."""
    bad = tmp_path / "web.yml"
    bad.write_text("tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n"
                   "  min_versio: TLS13\n")
    with pytest.raises(ConfigError) as err:
        webconfig.load(bad)
    assert err.value.errors == [
        f"{bad}:2: tls_server_config.cert_file: no such file: /nonexistent.crt",
        f"{bad}:3: tls_server_config.key_file: no such file: /nonexistent.key",
        f"{bad}:4: tls_server_config.min_versio: unknown key \"min_versio\" (did you mean \"min_version\"?)",
    ]


def test_https_metrics_with_basic_auth(pki):
    cfg = webconfig.load(_web_config(pki))
    server = serve("127.0.0.1", 0, registries=(), web=cfg)
    try:
        base = f"https://127.0.0.1:{server.server_address[1]}"
        ctx = _client_ctx(pki)
        assert _get(base + "/metrics", ctx, _basic("alice", PASSWORD)) == 200
        assert _get(base + "/metrics", ctx, _basic("alice", "wrong")) == 401
        assert _get(base + "/metrics", ctx, _basic("mallory", PASSWORD)) == 401
        assert _get(base + "/metrics", ctx) == 401
        assert _get(base + "/health", ctx) == 200  # probes carry no credentials
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):  # clients verify us
            _get(base + "/health", ssl.create_default_context())
    finally:
        server.shutdown()


def test_a_client_without_the_required_certificate_is_refused_at_the_handshake(pki):
    cfg = webconfig.load(_web_config(pki, client_auth="RequireAndVerifyClientCert"))
    assert cfg.authenticates
    server = serve("127.0.0.1", 0, web=cfg)
    try:
        port = server.server_address[1]
        assert _get(f"https://127.0.0.1:{port}/metrics", _client_ctx(pki, cert=True), _basic("alice", PASSWORD)) == 200
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
                with _client_ctx(pki).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    tls.sendall(b"GET /health HTTP/1.0\r\n\r\n")  # TLS 1.3: the refusal arrives on first use
                    assert tls.recv(100) == b"", "answered without a client certificate"
                    raise ConnectionResetError("closed without an answer")
    finally:
        server.shutdown()


def _start(cmd: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "KUBESIGHT_KAFKA": "127.0.0.1:1", **(env or {})})


@pytest.mark.parametrize("cmd", [
    ["silences", "serve", "--host", "0.0.0.0", "--port", "0"],
    ["silences", "serve", "--host", "10.1.2.3", "--port", "0"],
])
def test_an_open_write_endpoint_on_the_network_refuses_to_start(cmd):
    res = subprocess.run(KUBESIGHT + cmd, cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "KUBESIGHT_KAFKA": "127.0.0.1:1"})
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [
        f"kubesight silences serve: refusing to accept writes on {cmd[3]} without authentication: set "
        "basic_auth_users in a web config (--web-config), or say --insecure-listen to accept it"]


def test_remote_write_over_https_with_basic_auth_or_bearer_token(pki, tmp_path):
    """`kubesight collect metrics --stdout` as Prometheus sees it: basic auth or bearer, over TLS."""
    import asyncio

    import aiohttp

    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret-token\n")
    port = free_port()
    conf = tmp_path / "metrics.yaml"
    conf.write_text(f"remote_write:\n  host: 0.0.0.0\n  port: {port}\n  bearer_token_file: {tokens}\n"
                    f"  web_config: {_web_config(pki)}\ndiscovery:\n  kubernetes:\n    enabled: false\n")
    open_conf = tmp_path / "open.yaml"
    open_conf.write_text(f"remote_write:\n  host: 0.0.0.0\n  port: {port}\n"
                         "discovery:\n  kubernetes:\n    enabled: false\n")
    res = subprocess.run(KUBESIGHT + ["collect", "metrics", "--config", str(open_conf), "--stdout"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "remote-write intake: refusing to accept writes on 0.0.0.0" in res.stderr, res

    proc = _start(KUBESIGHT + ["collect", "metrics", "--config", str(conf), "--stdout"])
    try:
        req = WriteRequest()
        ts = req.timeseries.add()
        ts.labels.add(name="__name__", value="up")
        ts.samples.add(value=1.0, timestamp=int(time.time() * 1000))
        body = encode(req)
        url = f"https://127.0.0.1:{port}/api/v1/write"

        async def post(auth: str | None) -> int:
            deadline = time.monotonic() + 30
            async with aiohttp.ClientSession() as s:
                while True:
                    try:
                        async with s.post(url, data=body, ssl=_client_ctx(pki),
                                          headers={"Content-Encoding": "snappy", **({"Authorization": auth}
                                                                                    if auth else {})}) as r:
                            return r.status
                    except aiohttp.ClientConnectorError:
                        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                        await asyncio.sleep(0.2)

        assert asyncio.run(post(_basic("alice", PASSWORD))) == 204
        assert asyncio.run(post("Bearer s3cret-token")) == 204
        assert asyncio.run(post(_basic("alice", "wrong"))) == 401
        assert asyncio.run(post("Bearer wrong")) == 401
        assert asyncio.run(post(None)) == 401
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert out.count('"name":"up"') == 2, (out, err)


def test_wrong_passwords_never_hold_up_the_event_loop_and_odd_headers_are_a_401():
    """bcrypt ran on the event loop: ten wrong passwords of a known user froze every other request (probes, acks) for
    2 s. Now it runs in worker threads: a probe is answered while a wrong password is still being checked. A header of
    non-ASCII or raw bytes was a 500; it is a 401."""
    import asyncio

    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=13)).decode()  # ~0.5 s a check, on purpose
    cfg = webconfig.WebConfig(basic_auth_users={"alice": hashed})

    async def ok(request):
        return web.Response(text="ok")

    async def go():
        a = web.Application(middlewares=[cfg.middleware()])
        a.router.add_get("/healthz", ok)  # an open path, as the probes are
        a.router.add_get("/data", ok)
        async with TestClient(TestServer(a)) as c:
            wrong = asyncio.ensure_future(c.get("/data", headers={"Authorization": _basic("alice", "nope")}))
            await asyncio.sleep(0)  # let it reach the server and start its check
            probe = await c.get("/healthz")
            assert probe.status == 200 and not wrong.done()  # answered while the wrong password is checked
            assert (await wrong).status == 401
            for header in ("Basic é", "Basic YWxp\udcff", "Bearer \udcff"):
                r = await c.get("/data", headers={"Authorization": header}, skip_auto_headers=())
                assert r.status == 401, header

    asyncio.run(go())
