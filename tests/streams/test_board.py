"""The stability board in a real headless Chromium over the real broker (issue 17).

Alerts go to the alerts topic as the worker writes them (core.records encode); the board follows the
topic; Selenium drives Debian's chromium through chromedriver.  Every wait is a condition with a deadline.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import orjson
import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait as _Wait

from core.records import Alert
from streams.board import BoardThread
from streams.cli_board import chromium, produce_alerts

pytestmark = pytest.mark.kafka


def WebDriverWait(driver, timeout, poll=0.5):  # noqa: N802 - selenium's name, with one difference:
    # live updates re-render cells and lists, so an element found a moment ago may be gone: look again
    return _Wait(driver, timeout, poll, ignored_exceptions=(StaleElementReferenceException,))


def read(driver, fn):
    """``fn(driver)``, looked up again when a live update replaced an element it was reading."""
    return WebDriverWait(driver, WAIT, 0.05).until(lambda d: (fn(d),))[0]


def act(driver, fn):
    """Do ``fn(driver)`` (a click, typing) once it does not land on an element a live update replaced."""
    return WebDriverWait(driver, WAIT, 0.05).until(lambda d: fn(d) or True)


WAIT = 20


@pytest.fixture(scope="module")
def browser():
    drv = chromium(1300, 900)
    try:
        yield drv
    finally:
        drv.quit()


@pytest.fixture
def boards():
    started = []

    def start(settings, token=None):
        b = BoardThread(settings, settings.kafka, token=token)
        started.append(b)
        b.start_and_wait()
        return b

    yield start
    for b in started:
        b.stop()


def alert(cluster, pack, name, severity, status="firing", **labels):
    return Alert({"alertname": name, "severity": severity, "cluster": cluster, **labels},
                 {"summary": f"{name} in {cluster}"}, status, time.time() - 60,
                 time.time() if status == "resolved" else None, source=f"{pack}/{name}@1.0.0")


def cells(drv) -> dict:
    """(cluster, layer) -> (level, critical, warning, info, silenced) of every non-empty grid cell."""
    out = {}
    for el in drv.find_elements(By.CSS_SELECTOR, "#grid button.cell"):
        d = drv.execute_script("return Object.assign({}, arguments[0].dataset)", el)
        if int(d["firing"]):
            out[(d["row"], d["col"])] = (d["level"], int(d["critical"]), int(d["warning"]), int(d["info"]),
                                         int(d["silenced"]))
    return out


def cell(drv, row, col):
    return drv.find_element(By.CSS_SELECTOR, f'#grid button.cell[data-row="{row}"][data-col="{col}"]')


def wait_firing(drv, n):
    WebDriverWait(drv, WAIT, 0.05).until(lambda d: d.execute_script("return document.body.dataset.firing") == str(n))


def post(url, body, token=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_grid_matches_the_firing_alerts_and_is_read_only_by_default(settings, boards, browser):
    produce_alerts(settings.kafka, settings.topic("alerts"), [
        alert("c1", "nodes", "KubeNodeNotReady", "critical", node="n1", owner="team-nodes"),
        alert("c1", "workloads", "KubeContainerBackOff", "warning", namespace="shop", pod="web-1", owner="team-shop"),
        alert("c1", "resources", "KubeQuotaAlmostFull", "warning", namespace="shop", owner="team-shop"),
        alert("c2", "storage", "KubePersistentVolumeFillingUp", "info", namespace="db", owner="team-db"),
        alert("c2", "gpu", "GPUXidError", "critical", node="g1"),  # fires, then resolves: not on the board
        alert("c2", "gpu", "GPUXidError", "critical", "resolved", node="g1"),
        alert("c2", "workloads", "IngressDown", "critical", namespace="edge", owner="team-net"),  # network by name
        alert("c2", "control-plane", "KubeAPIErrorsHigh", "critical", layer="storage"),  # explicit layer label
    ])
    b = boards(settings)
    browser.get(b.url)
    wait_firing(browser, 6)
    assert read(browser, cells) == {
        ("c1", "node"): ("critical", 1, 0, 0, 0),
        ("c1", "workloads"): ("warning", 0, 2, 0, 0),
        ("c2", "storage"): ("critical", 1, 0, 1, 0),
        ("c2", "network"): ("critical", 1, 0, 0, 0),
    }
    # colour is never the only cue: a word and a shape say it too
    red_text, red_shape, red_label = read(browser, lambda d: (
        cell(d, "c1", "node").text, cell(d, "c1", "node").find_element(By.CSS_SELECTOR, "use").get_attribute("href"),
        cell(d, "c1", "node").get_attribute("aria-label")))
    assert "CRITICAL" in red_text and "1 critical" in red_text
    assert red_shape == "#s-critical"
    yellow_text = read(browser, lambda d: cell(d, "c1", "workloads").text)
    assert "WARNING" in yellow_text and "2 warning" in yellow_text
    # an empty cell is green only once the board has read the backlog (before: grey, LOADING; audit 2026-12)
    WebDriverWait(browser, WAIT, 0.05).until(lambda d: d.execute_script("return document.body.dataset.caughtUp") == "1")
    assert read(browser, lambda d: cell(d, "c2", "gpu").text).startswith("OK")  # resolved: back to green
    assert read(browser, lambda d: d.find_element(By.ID, "total-level").get_attribute("data-level")) == "critical"
    assert "c1 / Node / kernel: CRITICAL" in red_label
    # a push carries the worst GRID_ROWS clusters (both red here, c2 after c1 by name): the rest are a counted row
    b.call(lambda: (setattr(b.board.model, "GRID_ROWS", 1), setattr(b.board.model, "version", b.board.model.version + 1)))
    more = "#grid tr.more-clusters td.more"
    WebDriverWait(browser, WAIT, 0.05).until(lambda d: d.find_elements(By.CSS_SELECTOR, more))
    assert read(browser, lambda d: d.find_element(By.CSS_SELECTOR, more).text) == (
        "+ 1 more cluster (1 critical, 0 warning, 0 OK; the worst 1 are shown)")
    assert read(browser, lambda d: [e.text for e in d.find_elements(By.CSS_SELECTOR, "#grid tbody th")]) == ["c1"]
    # the second view: teams x namespaces
    act(browser, lambda d: d.find_element(By.ID, "tab-team").click())
    chip_css = '#teams button.chip[data-row="team-shop"][data-col="shop"]'
    assert read(browser, lambda d: (d.find_element(By.CSS_SELECTOR, chip_css).get_attribute("data-level"),
                                    d.find_element(By.CSS_SELECTOR, chip_css).get_attribute("data-warning"))) == (
        "warning", "2")
    # drill-down: labels, annotations, start time, receivers; no silence button without a token
    act(browser, lambda d: d.find_element(By.CSS_SELECTOR, chip_css).click())
    WebDriverWait(browser, WAIT).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#drill-list li")) == 2)
    text = read(browser, lambda d: d.find_element(By.ID, "drill").text)
    assert "KubeContainerBackOff" in text and "pod=web-1" in text and "summary: KubeContainerBackOff in c1" in text
    assert "since " in text and "receivers: unknown (no routing file)" in text
    assert browser.find_elements(By.CSS_SELECTOR, "#drill-list button.silence") == []
    body = {"matchers": [{"name": "alertname", "value": "X"}], "startsAt": "2030-01-01T00:00:00Z",
            "endsAt": "2030-01-01T01:00:00Z", "createdBy": "t", "comment": "t"}
    assert post(b.url + "alertmanager/api/v2/silences", body, token="anything") == 403


def test_a_new_alert_turns_a_cell_red_without_a_reload(settings, boards, browser):
    produce_alerts(settings.kafka, settings.topic("alerts"), [
        alert("prod", "workloads", "KubeContainerBackOff", "warning", namespace="shop", pod="web-1")])
    b = boards(settings)
    browser.get(b.url)
    WebDriverWait(browser, WAIT, 0.05).until(lambda d: cell(d, "prod", "workloads").get_attribute("data-level") == "warning")
    browser.execute_script("window.__sameDocument = 'still here'")
    renders = browser.execute_script("return window.__board.renders")
    produce_alerts(settings.kafka, settings.topic("alerts"), [
        alert("prod", "workloads", "KubePodCrashLooping", "critical", namespace="shop", pod="web-2")])
    WebDriverWait(browser, WAIT, 0.05).until(lambda d: cell(d, "prod", "workloads").get_attribute("data-level") == "critical")
    assert browser.execute_script("return window.__sameDocument") == "still here"  # no reload happened
    assert browser.execute_script("return window.__board.renders") > renders
    red_text = read(browser, lambda d: cell(d, "prod", "workloads").text)
    assert "CRITICAL" in red_text and "1 critical · 1 warning" in red_text
    WebDriverWait(browser, WAIT).until(
        lambda d: d.find_element(By.ID, "freshness").text.startswith("updated "))
    assert browser.find_element(By.ID, "conn").text == "live"


def test_a_silence_created_on_the_page_mutes_the_alert(settings, boards, browser, tmp_path):
    from kafka import KafkaConsumer, TopicPartition

    a = alert("prod", "storage", "KubePersistentVolumeErrors", "critical", namespace="db", owner="team-db")
    produce_alerts(settings.kafka, settings.topic("alerts"), [a])
    b = boards(settings, token=["old-token", "s3cret-token"])  # a token file of two lines: a rotation
    body = {"matchers": [{"name": "alertname", "value": "X"}], "startsAt": "2030-01-01T00:00:00Z",
            "endsAt": "2030-01-01T01:00:00Z", "createdBy": "t", "comment": "t"}
    assert post(b.url + "alertmanager/api/v2/silences", body, token="wrong-token") == 401
    assert post(b.url + "alertmanager/api/v2/silences", body) == 401
    assert post(b.url + "alertmanager/api/v2/silences", {}, token="old-token") == 400  # let in; the body is wrong
    browser.get(b.url)
    WebDriverWait(browser, WAIT, 0.05).until(lambda d: cell(d, "prod", "storage").get_attribute("data-level") == "critical")
    act(browser, lambda d: d.find_element(By.ID, "token").send_keys("s3cret-token"))
    act(browser, lambda d: cell(d, "prod", "storage").click())
    act(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#drill-list li button.silence").click())
    act(browser, lambda d: d.find_element(By.ID, "silence-comment").send_keys("disk replaced, rebuilding"))
    act(browser, lambda d: d.find_element(By.ID, "silence-submit").click())
    sid = WebDriverWait(browser, WAIT).until(lambda d: d.execute_script("return document.body.dataset.lastSilence"))
    # it is on the silences topic, as the CLI and the API write it
    c = KafkaConsumer(bootstrap_servers=settings.kafka, isolation_level="read_committed", enable_auto_commit=False)
    try:
        tp = TopicPartition(settings.topic("silences"), 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        found = None
        deadline = time.monotonic() + WAIT
        while found is None and time.monotonic() < deadline:
            for m in c.poll(timeout_ms=200).get(tp, []):
                if m.key == sid.encode():
                    found = orjson.loads(m.value)
    finally:
        c.close()
    assert found is not None, f"silence {sid} not on {settings.topic('silences')}"
    assert {(m["name"], m["value"]) for m in found["matchers"]} == set(a.labels.items())
    assert found["comment"] == "disk replaced, rebuilding"
    # the alert shows silenced and no longer colours its cell
    WebDriverWait(browser, WAIT, 0.05).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#drill-list li").get_attribute("data-silenced") == "1")
    WebDriverWait(browser, WAIT, 0.05).until(lambda d: "SILENCED" in d.find_element(By.CSS_SELECTOR, "#drill-list li").text)
    WebDriverWait(browser, WAIT, 0.05).until(lambda d: cell(d, "prod", "storage").get_attribute("data-level") == "ok")
    assert cell(browser, "prod", "storage").get_attribute("data-silenced") == "1"
    # and expiring it from the page brings the alert back
    act(browser, lambda d: d.find_element(By.CSS_SELECTOR, f'#drill-list button.expire[data-silence="{sid}"]').click())
    WebDriverWait(browser, WAIT, 0.05).until(lambda d: cell(d, "prod", "storage").get_attribute("data-level") == "critical")


def test_an_inhibited_alert_shows_apart_and_comes_back_when_its_source_resolves(settings, boards, browser, tmp_path):
    from streams.board import layer_of

    routing = tmp_path / "routing.yaml"
    routing.write_text("route: {receiver: r}\nreceivers: [{name: r}]\ndefault_inhibit_rules: true\n")  # node down
    settings = settings.model_copy(update={"routing": str(routing)})
    node = alert("prod", "nodes", "KubeNodeNotReady", "critical", node="n1")
    pod = alert("prod", "workloads", "KubePodCrashLooping", "warning", node="n1", pod="web-0", namespace="shop",
                workload="Deployment/web")
    produce_alerts(settings.kafka, settings.topic("alerts"), [node, pod])
    b = boards(settings)
    col = layer_of(pod.labels, pod.source)
    browser.get(b.url)
    wait_firing(browser, 2)
    WebDriverWait(browser, WAIT, 0.05).until(lambda d: cell(d, "prod", col).get_attribute("data-inhibited") == "1")
    assert cell(browser, "prod", col).get_attribute("data-level") == "ok"  # an inhibited alert colours nothing
    act(browser, lambda d: cell(d, "prod", col).click())
    WebDriverWait(browser, WAIT, 0.05).until(lambda d: "INHIBITED" in d.find_element(By.CSS_SELECTOR, "#drill-list li").text)
    assert f"inhibited by {node.fingerprint[:8]}" in read(browser, lambda d: d.find_element(By.CSS_SELECTOR,
                                                                                             "#drill-list li").text)
    # the node is back: its pod's alert is no longer inhibited
    produce_alerts(settings.kafka, settings.topic("alerts"),
                   [alert("prod", "nodes", "KubeNodeNotReady", "critical", status="resolved", node="n1")])
    WebDriverWait(browser, WAIT, 0.05).until(lambda d: cell(d, "prod", col).get_attribute("data-level") == "warning")
    assert cell(browser, "prod", col).get_attribute("data-inhibited") == "0"


def test_the_drill_down_says_who_was_notified(settings, boards, browser):
    import msgspec

    from core.records import format_time

    # generatorURL is whatever the alert's sender wrote: a link only when it is a web page's (audit 2026-12)
    a = msgspec.structs.replace(alert("prod", "storage", "KubePersistentVolumeFillingUp", "warning", namespace="db",
                                      owner="team-db"), generatorURL="javascript:document.title='owned'")
    web = msgspec.structs.replace(alert("prod", "nodes", "KubeNodeNotReady", "warning", node="n1"),
                                  generatorURL="https://prometheus.example/graph?g0.expr=up")
    produce_alerts(settings.kafka, settings.topic("alerts"), [a, web])
    b = boards(settings)
    browser.get(b.url)
    wait_firing(browser, 2)
    act(browser, lambda d: cell(d, "prod", "node").click())
    WebDriverWait(browser, WAIT, 0.05).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#drill-list li a"))
    assert read(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#drill-list li a").get_attribute("href")) == \
        "https://prometheus.example/graph?g0.expr=up"
    act(browser, lambda d: cell(d, "prod", "storage").click())
    WebDriverWait(browser, WAIT, 0.05).until(lambda d: "notified: not yet" in d.find_element(By.CSS_SELECTOR,
                                                                                             "#drill-list li").text)
    assert not read(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#drill-list li a"))
    assert "source link: javascript:" in read(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#drill-list li").text)
    at = format_time(time.time())
    note = {"v": 1, "kind": "notification", "id": "n1", "receiver": "team-db", "groupKey": "{}:{}",
            "groupLabels": {}, "status": "firing", "alerts": [a.to_dict()], "time": at}
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=settings.kafka)
    p.send(settings.topic("notifications"), orjson.dumps(note), key=b"{}:{}")
    p.flush()
    p.close()
    WebDriverWait(browser, WAIT, 0.05).until(
        lambda d: f"notified: team-db ({at})" in d.find_element(By.CSS_SELECTOR, "#drill-list li").text)
    assert cell(browser, "prod", "storage").get_attribute("data-undelivered") == "0"
    # delivery's receiver-health (as streams.alerting.Deliverer._health writes it): the receiver fails now
    pill = '#totals .receiver[data-integration="team-db/webhook[0]"]'
    p = KafkaProducer(bootstrap_servers=settings.kafka)
    for state, reason, waiting in (("retrying", "HTTP 503: busy", [a.fingerprint]),
                                   ("failing", "retry budget of 60s spent after 5 attempts", [])):
        p.send(settings.topic("receiver-health"), orjson.dumps(
            {"v": 1, "kind": "receiver-health", "receiver": "team-db", "integration": "team-db/webhook[0]",
             "state": state, "since": at, "attempts": 5, "reason": reason, "waitingAlerts": len(waiting),
             "waiting": waiting}), key=b"team-db/webhook[0]")
        p.flush()
        WebDriverWait(browser, WAIT, 0.05).until(
            lambda d, state=state: d.find_elements(By.CSS_SELECTOR, pill)
            and d.find_element(By.CSS_SELECTOR, pill).get_attribute("data-state") == state)
        assert f"team-db/webhook[0] {state.upper()}: {reason}" + (" · 1 alert wait" if waiting else "") == read(
            browser, lambda d: d.find_element(By.CSS_SELECTOR, pill).text)
        if waiting:  # the drill-down says the alert has reached nobody yet, and why
            WebDriverWait(browser, WAIT, 0.05).until(
                lambda d: f"WAITING for team-db ({at}): team-db/webhook[0] retrying since {at}: HTTP 503: busy"
                in d.find_element(By.CSS_SELECTOR, "#drill-list li").text)
            assert "notified: not yet" in read(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#drill-list li").text)
    WebDriverWait(browser, WAIT, 0.05).until(  # given up: it waits no more (its dead letter follows)
        lambda d: "WAITING" not in d.find_element(By.CSS_SELECTOR, "#drill-list li").text)
    # delivery gives it up (the receiver kept answering 503): its dead letter, as streams.alerting writes it
    from core.records import deadletter

    p.send(settings.topic("deadletter"), deadletter("team-db/webhook[0]: HTTP 503 after 5 attempts", orjson.dumps(note),
                                                    origin="alerts/deliver", key=b"{}:{}",
                                                    topic=settings.topic("notifications"), partition=0, offset=0),
           key=b"{}:{}")
    p.flush()
    WebDriverWait(browser, WAIT, 0.05).until(
        lambda d: f"NOT DELIVERED to team-db ({at}): team-db/webhook[0]: HTTP 503 after 5 attempts"
        in d.find_element(By.CSS_SELECTOR, "#drill-list li").text)
    WebDriverWait(browser, WAIT, 0.05).until(lambda d: cell(d, "prod", "storage").get_attribute("data-undelivered") == "1")
    assert "1 undelivered" in read(browser, lambda d: d.find_element(By.ID, "total-undelivered").text)
    assert "notified: not yet" in read(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#drill-list li").text)
    # the next notification of it (a repeat) is the latest the board knows of: no longer undelivered
    later = format_time(time.time() + 1)
    p.send(settings.topic("notifications"), orjson.dumps(dict(note, id="n2", time=later)), key=b"{}:{}")
    p.send(settings.topic("receiver-health"), orjson.dumps(
        {"v": 1, "kind": "receiver-health", "receiver": "team-db", "integration": "team-db/webhook[0]", "state": "ok",
         "since": later, "attempts": 1, "reason": ""}), key=b"team-db/webhook[0]")
    p.flush()
    p.close()
    WebDriverWait(browser, WAIT, 0.05).until(lambda d: cell(d, "prod", "storage").get_attribute("data-undelivered") == "0")
    WebDriverWait(browser, WAIT, 0.05).until(lambda d: not d.find_elements(By.CSS_SELECTOR, pill))  # recovered
    act(browser, lambda d: cell(d, "prod", "storage").click())
    WebDriverWait(browser, WAIT, 0.05).until(
        lambda d: f"notified: team-db ({later})" in d.find_element(By.CSS_SELECTOR, "#drill-list li").text)


def test_the_summary_follows_the_incidents_and_receiver_health_topics(settings, boards):
    """Both are followed once they exist (found: the incidents topic never was, its partitions looked up where a
    consumer cannot see them); no browser: the summary the page is sent."""
    from kafka import KafkaProducer

    b = boards(settings)
    p = KafkaProducer(bootstrap_servers=settings.kafka)
    p.send(settings.topic("incidents"), orjson.dumps({"v": 1, "id": "inc-1", "status": "open", "cluster": "prod"}),
           key=b"inc-1")
    p.send(settings.topic("receiver-health"), orjson.dumps(
        {"v": 1, "kind": "receiver-health", "receiver": "team-db", "integration": "team-db/webhook[0]",
         "state": "failing", "since": "2026-11-29T07:00:00.000Z", "attempts": 5, "reason": "HTTP 404"}),
        key=b"team-db/webhook[0]")
    p.flush()
    p.close()

    def summary():
        with urllib.request.urlopen(b.url + "api/summary", timeout=10) as r:
            return json.loads(r.read())

    deadline = time.monotonic() + WAIT
    while True:
        s = summary()
        if s["incidents"]["open"] and s["receivers"]:
            break
        assert time.monotonic() < deadline, f"the board did not follow both topics: {s['incidents']}, {s['receivers']}"
        time.sleep(0.2)
    assert s["incidents"] == {"open": 1, "byCluster": {"prod": 1}}
    assert [(r["integration"], r["state"], r["reason"]) for r in s["receivers"]] == [
        ("team-db/webhook[0]", "failing", "HTTP 404")]
    # a page far past the end is the last page, not a 500
    with urllib.request.urlopen(b.url + "api/alerts?view=grid&row=prod&offset=99999999999999999999999",
                                timeout=10) as r:
        page = json.loads(r.read())
    assert page["offset"] == ((page["total"] - 1) // page["limit"] * page["limit"] if page["total"] else 0)
    # the board holds no Alertmanager alerts: its Alertmanager API has the silences, and no /alerts saying none fire
    for path in ("alerts", "alerts/groups", "receivers", "status"):
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(b.url + "alertmanager/api/v2/" + path, timeout=10)
        assert exc.value.code == 404
    with urllib.request.urlopen(b.url + "alertmanager/api/v2/silences", timeout=10) as r:
        assert r.status == 200
