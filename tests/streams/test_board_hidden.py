"""The clusters a push leaves out (beyond the worst GRID_ROWS) can be found by name and opened (audit 2026-12).

A push carries the worst 100 clusters; the others were counted in the grid's "+N more" row and could not be opened
from the page (README, "What is weak").  ``/api/clusters`` finds them by name, a bounded page at a time, with the
cells the drill-down opens by id.  Over the test broker: the HTTP test asks the board's server, the browser test
types into the page's box in Debian's chromium.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from selenium.webdriver.common.by import By

from core.records import Alert
from streams.board import BoardState
from streams.cli_board import produce_alerts
from tests.streams.test_board import WAIT, WebDriverWait, act, alert, boards, browser, cell, read, wait_firing  # noqa: F401

pytestmark = pytest.mark.kafka

RED = BoardState.GRID_ROWS  # as many red clusters as a push carries: any other cluster is left out of it
QUIET = ["quiet-000", "quiet-001", "<b>quiet-002</b>"]  # green, so never among the worst; a name the page must escape


def fire(settings) -> dict[str, Alert]:
    """RED critical clusters and the QUIET ones (an info alert each); the QUIET ones' alerts by cluster."""
    quiet = {c: alert(c, "nodes", "KubeNodeCPUHigh", "info", node="n1") for c in QUIET}
    produce_alerts(settings.kafka, settings.topic("alerts"),
                   [alert(f"red-{i:03d}", "nodes", "KubeNodeNotReady", "critical", node="n1") for i in range(RED)]
                   + list(quiet.values()))
    return quiet


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def test_a_cluster_beyond_the_worst_100_is_found_and_opened_over_http(settings, boards):  # noqa: F811
    quiet = fire(settings)
    b = boards(settings)
    deadline = time.monotonic() + WAIT
    while not ((s := get(b.url + "api/summary"))["caughtUp"] and s["total"]["firing"] == RED + len(QUIET)):
        assert time.monotonic() < deadline, f"the board did not read the alerts: {s['total']}"
        time.sleep(0.1)
    assert len(s["clusters"]) == RED and not set(QUIET) & set(s["clusters"]) and s["clustersMore"] == len(QUIET)
    assert {c["row"] for c in s["grid"]} == set(s["clusters"])  # the push stays bounded: no cell of the others

    def clusters(**q) -> dict:
        return get(b.url + "api/clusters?" + urllib.parse.urlencode(q))

    # by name (any case): its cells, and the drill-down a shown cluster's cell opens
    found = clusters(q="QUIET-001")
    assert (found["total"], [(c["cluster"], c["level"], c["firing"]) for c in found["clusters"]]) == (
        1, [("quiet-001", "ok", 1)])
    (only,) = found["clusters"][0]["cells"]
    assert (only["row"], only["col"], only["info"], only["level"]) == ("quiet-001", "node", 1, "ok")
    page = get(b.url + "api/alerts?" + urllib.parse.urlencode({"cell": only["id"]}))
    assert (page["total"], page["alerts"][0]["fingerprint"]) == (1, quiet["quiet-001"].fingerprint)
    assert page["alerts"][0]["labels"]["cluster"] == "quiet-001"
    # the "+N more" row's list: every cluster in the grid's order, the ones after the worst RED last
    rest = clusters(offset=RED)
    assert (rest["total"], rest["offset"]) == (RED + len(QUIET), RED)
    assert [c["cluster"] for c in rest["clusters"]] == sorted(QUIET)
    first = clusters(limit=10**6)  # bounded, whatever is asked
    assert (first["limit"], len(first["clusters"])) == (BoardState.FIND_ROWS, BoardState.FIND_ROWS)
    assert [c["cluster"] for c in first["clusters"]] == s["clusters"]  # the same order as the grid's
    assert clusters(q="no-such-cluster") == {"query": "no-such-cluster", "total": 0, "offset": 0, "limit": 20,
                                             "clusters": []}
    with pytest.raises(urllib.error.HTTPError) as exc:
        clusters(offset="x")
    assert exc.value.code == 400


def grid_rows(drv) -> list[str]:
    return [e.text.splitlines()[0] for e in drv.find_elements(By.CSS_SELECTOR, "#grid tbody th")]


def test_typing_a_name_shows_a_hidden_cluster_and_opens_its_alerts(settings, boards, browser):  # noqa: F811
    quiet = fire(settings)
    b = boards(settings)
    browser.get(b.url)
    wait_firing(browser, RED + len(QUIET))
    WebDriverWait(browser, WAIT, 0.05).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#grid tr.more-clusters"))
    assert "quiet-001" not in read(browser, grid_rows)
    act(browser, lambda d: d.find_element(By.ID, "cluster-find").send_keys("Quiet-001"))
    WebDriverWait(browser, WAIT, 0.05).until(lambda d: grid_rows(d) == ["quiet-001"])
    assert read(browser, lambda d: d.find_element(By.ID, "find-range").text) == (
        'clusters 1–1 of 1 whose name contains "Quiet-001", worst first')
    act(browser, lambda d: cell(d, "quiet-001", "node").click())
    WebDriverWait(browser, WAIT, 0.05).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#drill-list li"))
    li = read(browser, lambda d: (d.find_element(By.CSS_SELECTOR, "#drill-list li").get_attribute("data-fingerprint"),
                                  d.find_element(By.ID, "drill").text))
    assert li[0] == quiet["quiet-001"].fingerprint and "cluster=quiet-001" in li[1] and "KubeNodeCPUHigh" in li[1]
    # the "+N more" row lists the others, worst first; a name is text, never markup
    act(browser, lambda d: d.find_element(By.ID, "find-clear").click())
    WebDriverWait(browser, WAIT, 0.05).until(lambda d: len(grid_rows(d)) == RED)
    act(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#grid tr.more-clusters button.more-open").click())
    WebDriverWait(browser, WAIT, 0.05).until(lambda d: grid_rows(d) == sorted(QUIET))
    assert read(browser, lambda d: d.find_element(By.ID, "find-range").text) == (
        f"clusters {RED + 1}–{RED + len(QUIET)} of {RED + len(QUIET)}, worst first")
    assert browser.find_elements(By.CSS_SELECTOR, "#grid tbody th b") == []
    act(browser, lambda d: cell(d, "<b>quiet-002</b>", "node").click())
    WebDriverWait(browser, WAIT, 0.05).until(
        lambda d: d.find_element(By.ID, "drill-title").text == "<b>quiet-002</b> / Node / kernel")
    WebDriverWait(browser, WAIT, 0.05).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#drill-list li").get_attribute("data-fingerprint")
        == quiet["<b>quiet-002</b>"].fingerprint)
