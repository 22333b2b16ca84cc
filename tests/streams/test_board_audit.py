"""The board's audit (2026-12): what a summary costs and carries, what the page links, what a (re)starting board
says, which Host it answers, and cells whose names are too long for a URL.  Model tests need no I/O; the HTTP ones
run a board over the test broker."""

from __future__ import annotations

from streams.board import BoardState


class Team(str):
    """A team name that counts how often it is compared for equality: the summary's work per team row."""

    eqs = 0

    def __eq__(self, other):
        Team.eqs += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def crashloop(i: int, team: str, ns: str, severity: str = "warning") -> dict:
    return {"labels": {"alertname": "KubePodCrashLooping", "severity": severity, "cluster": "prod", "namespace": ns,
                       "owner": team, "pod": f"p{i}"},
            "status": "firing", "startsAt": "2026-01-01T00:00:00Z", "fingerprint": f"f{i}",
            "source": "workloads/KubePodCrashLooping@1"}


def test_the_summary_of_n_teams_compares_team_names_o_n_times():
    """Each team row scanned every (team, namespace) pair: 8,000 teams of one namespace each took 1.7 s per
    summary, on the event loop, at every change.  Counted, not timed: team names compared for equality."""
    n = 3000
    m = BoardState()
    for i in range(n):
        m.apply_alert(crashloop(i, Team(f"team-{i:05d}"), f"pr-{i}"))
    Team.eqs = 0
    s = m.summary(0)
    assert s["total"]["firing"] == n and len(s["teams"]) + s["teamsMore"] == n
    assert Team.eqs < 20 * n, f"{Team.eqs} comparisons of team names for {n} teams"


def test_a_push_carries_the_worst_teams_and_namespaces_and_counts_the_rest():
    m = BoardState()
    i = 0
    for t in range(204):  # team-000 has 55 namespaces; the others one each
        for ns in range(55 if t == 0 else 1):
            m.apply_alert(crashloop(i, f"team-{t:03d}", f"ns-{ns:02d}"))
            i += 1
    m.apply_alert(crashloop(i, "team-zzz", "ns-00", "critical"))  # last by name, worst by level: shown first
    m.apply_alert(crashloop(i + 1, "team-000", "ns-zz", "critical"))
    s = m.summary(0)
    assert s["total"]["firing"] == 55 + 203 + 2
    assert (len(s["teams"]), s["teamsMore"]) == (BoardState.TEAM_ROWS, 205 - BoardState.TEAM_ROWS)
    assert [t["team"] for t in s["teams"][:3]] == ["team-000", "team-zzz", "team-001"]
    first = s["teams"][0]
    assert (first["firing"], first["level"], first["critical"]) == (56, "critical", 1)  # every namespace counted
    assert (len(first["namespaces"]), first["namespacesMore"]) == (BoardState.TEAM_CHIPS, 56 - BoardState.TEAM_CHIPS)
    assert [n["ns"] for n in first["namespaces"][:3]] == ["ns-zz", "ns-00", "ns-01"]
    assert s["teams"][1]["namespacesMore"] == 0


def node_alert(i: int, cluster: str, severity: str) -> dict:
    return {"labels": {"alertname": "KubeNodeNotReady", "severity": severity, "cluster": cluster, "node": f"n{i}"},
            "status": "firing", "startsAt": "2026-01-01T00:00:00Z", "fingerprint": f"n{i}",
            "source": "nodes/KubeNodeNotReady@1"}


def test_a_push_carries_the_worst_clusters_and_counts_the_rest():
    """5,000 clusters made one push of 1.5 MB to every page and a grid of 35,000 cells: a summary carries the worst
    GRID_ROWS clusters, by level (a red one last by name is never left out for a green one), then firing alerts,
    then open incidents, then name; the rest are counted, and how many of them are red or yellow."""
    m = BoardState()
    i = 0

    def fire(cluster, severity):
        nonlocal i
        m.apply_alert(node_alert(i, cluster, severity))
        i += 1

    for c in range(150):  # green: info alerts only
        fire(f"c-{c:03d}", "info")
    fire("c-149", "info")  # two alerts: the first of the green ones
    fire("zz-red", "critical")
    for sev in ("critical", "info", "info"):  # red too, and fuller
        fire("x-red", sev)
    fire("w-a", "warning")
    fire("w-b", "warning")
    fire("w-b", "info")
    m.incidents["i1"] = {"id": "i1", "cluster": "c-120"}  # an open incident: first of the green ones of one alert
    s = m.summary(0)
    cap = BoardState.GRID_ROWS
    assert s["total"]["firing"] == i and (s["total"]["critical"], s["total"]["warning"]) == (2, 2)  # all counted
    assert len(s["clusters"]) == cap and s["clustersMore"] == 154 - cap
    assert s["clusters"][:7] == ["x-red", "zz-red", "w-b", "w-a", "c-149", "c-120", "c-000"]
    assert s["clusters"][-1] == f"c-{cap - 7:03d}" and s["clustersMoreLevels"] == {"critical": 0, "warning": 0}
    assert {c["row"] for c in s["grid"]} == set(s["clusters"]) and len(s["grid"]) == cap  # one layer each
    assert s["incidents"] == {"open": 1, "byCluster": {"c-120": 1}}
    assert all(m.cell(c["id"]) == ("grid", c["row"], "node") for c in s["grid"])
    opened = next(c["id"] for c in s["grid"] if c["row"] == "c-149")
    m.GRID_ROWS = 1
    s = m.summary(0)
    assert m.cell(opened) == ("grid", "c-149", "node")  # a drill-down open on a cluster no longer sent follows it
    assert (s["clusters"], s["clustersMore"], s["clustersMoreLevels"]) == (["x-red"], 153, {"critical": 1,
                                                                                           "warning": 2})
    assert [c["row"] for c in s["grid"]] == ["x-red"] and s["incidents"]["byCluster"] == {}


def test_a_board_reading_its_backlog_says_unknown_not_ok():
    """A restarted board said OK (the page: green, "No alert firing") while it read a backlog of 20,000 critical
    alerts.  Until the alerts and silences are read to their end the level is "unknown" (the page: grey LOADING)."""
    from core.settings import Settings
    from streams.board import Board

    b = Board(Settings(kafka="127.0.0.1:9", topic_prefix="audit-", app_id="audit"), "127.0.0.1:9")
    s = b.summary(0)
    assert (s["caughtUp"], s["total"]["level"], s["total"]["firing"]) == (False, "unknown", 0)
    b.model.apply_alert(crashloop(1, "team-a", "shop"))
    assert b.summary(0)["total"]["level"] == "unknown"  # some of the backlog read: still not the whole truth
    b.caught_up.set()
    assert b.summary(0)["total"]["level"] == "unknown"  # the silences are not read yet: a muted alert would colour
    b.book.caught_up.set()
    assert b.summary(0)["total"]["level"] == "warning"
    b.model.apply_alert(dict(crashloop(1, "team-a", "shop"), status="resolved"))
    assert b.summary(0)["total"]["level"] == "ok"


def _board():
    from core.settings import Settings
    from streams.board import Board

    return Board(Settings(kafka="127.0.0.1:9", topic_prefix="audit-", app_id="audit"), "127.0.0.1:9")


def test_a_request_for_another_host_name_is_refused():
    """DNS rebinding: a page of evil.example, its name re-pointed at 127.0.0.1, read the board as its own origin
    (the Host header was never looked at).  Raw requests: the Host is what the test sets."""
    import asyncio

    from aiohttp.test_utils import TestServer

    from streams.board import web_app

    async def go():
        server = TestServer(web_app(_board(), None, hosts=("127.0.0.1", "board.example")), host="127.0.0.1")
        await server.start_server()
        out = {}
        try:
            for host in ("evil.example:9094", "board.example:9094", f"127.0.0.1:{server.port}", "localhost"):
                r, w = await asyncio.open_connection("127.0.0.1", server.port)
                w.write(f"GET /api/summary HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
                out[host] = (await r.read()).split(b" ", 2)[1]
                w.close()
        finally:
            await server.close()
        return out

    got = asyncio.run(go())
    assert [got[h] for h in got] == [b"421", b"200", b"200", b"200"], got


def test_a_cell_whose_name_is_too_long_for_a_url_drills_down_by_its_id():
    """A team of 9,000 characters (from a workload's annotation): the page asked /api/alerts?row=<the name>, aiohttp
    refused the request line (over 8 KiB) and the drill-down never opened.  The summary gives each cell a short id,
    the same in every summary; the page asks by it."""
    long_team, long_cluster = "t" * 9000, "c-" + "x" * 9000
    m = BoardState()
    m.apply_alert(crashloop(1, long_team, "ml"))
    m.apply_alert(dict(crashloop(2, "team-a", "shop"), labels={**crashloop(2, "team-a", "shop")["labels"],
                                                                 "cluster": long_cluster}))
    s = m.summary(0)
    ids = [c["id"] for c in s["grid"]] + [t["id"] for t in s["teams"]] + [n["id"] for t in s["teams"]
                                                                         for n in t["namespaces"]]
    assert len(set(ids)) == len(ids) == 6 and all(len(i) <= 20 for i in ids)
    team = next(t for t in s["teams"] if t["team"] == long_team)
    assert m.cell(team["id"]) == ("team", long_team, None)
    assert m.cell(team["namespaces"][0]["id"]) == ("team", long_team, "ml")
    grid = next(c for c in s["grid"] if c["row"] == long_cluster)
    assert m.cell(grid["id"]) == ("grid", long_cluster, "workloads")
    assert m.summary(1)["grid"] == s["grid"]  # the same ids next time: an open drill-down follows its cell
    assert m.cell("nope") is None


def test_the_alerts_api_looks_a_cell_up_by_its_id():
    import asyncio

    from aiohttp.test_utils import TestClient, TestServer

    from streams.board import web_app

    async def go():
        b = _board()
        b.model.apply_alert(crashloop(1, "t" * 9000, "ml"))
        async with TestClient(TestServer(web_app(b, None))) as client:
            s = await (await client.get("/api/summary")).json()
            page = await (await client.get("/api/alerts", params={"cell": s["teams"][0]["namespaces"][0]["id"]})).json()
            gone = await (await client.get("/api/alerts", params={"cell": "0" * 18})).json()
        return page, gone

    page, gone = asyncio.run(go())
    assert (page["total"], page["alerts"][0]["fingerprint"]) == (1, "f1")
    assert (gone["total"], gone["alerts"]) == (0, [])
