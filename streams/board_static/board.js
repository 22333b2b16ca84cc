// kubesight stability board: plain DOM, no framework, no external asset.
// The server aggregates; this page renders the cells it is sent (server-sent events) and fetches the
// alerts of one cell a page at a time.  Every text from the server goes in through textContent.
"use strict";

const WORD = { ok: "OK", warning: "WARNING", critical: "CRITICAL", unknown: "LOADING" };
const PAGE = 50;
const FIND_PAGE = 50;  // clusters a page of found ones shows (the server answers 100 at most)
const st = {
  view: "grid", summary: null, lastMsg: null, writable: false, routing: false,
  drill: null, drillVersion: -1, timers: {}, renders: 0, dialogAlert: null,
  find: null, findVersion: -1,  // the clusters asked for by name (or the "+N more" row): {q, offset, page}
};
window.__board = { renders: 0, firstRenderMs: null, drills: 0, lastDrillMs: null };

function h(tag, attrs, ...kids) {
  const ns = tag === "svg" || tag === "use" ? "http://www.w3.org/2000/svg" : null;
  const el = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.setAttribute("class", v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

function shape(level) {
  return h("svg", { class: "shape", viewBox: "0 0 16 16", "aria-hidden": "true" },
           h("use", { href: "#s-" + (level === "unknown" ? "muted" : level) }));
}

function countsText(c) {
  const parts = [];
  if (c.critical) parts.push(c.critical + " critical");
  if (c.warning) parts.push(c.warning + " warning");
  if (c.info) parts.push(c.info + " info");
  if (c.silenced) parts.push(c.silenced + " silenced");
  if (c.inhibited) parts.push(c.inhibited + " inhibited");
  if (c.undelivered) parts.push(c.undelivered + " undelivered");
  return parts.length ? parts.join(" · ") : "no alert";
}

function cellData(c) {
  return { level: c.level, firing: c.firing, critical: c.critical, warning: c.warning, info: c.info,
           silenced: c.silenced, inhibited: c.inhibited, undelivered: c.undelivered || 0 };
}

// a receiver delivery cannot reach now (receiver-health): retrying, or failing (it gave a notification up)
function receiverPill(r) {
  const level = r.state === "failing" ? "critical" : "warning";
  const why = r.reason ? ": " + (r.reason.length > 60 ? r.reason.slice(0, 59) + "…" : r.reason) : "";
  return h("span", { class: "pill receiver lv-" + level, dataset: { integration: r.integration, state: r.state },
                     title: `delivery to ${r.integration}: ${r.state} since ${r.since} (${r.attempts} attempts)` +
                            (r.reason ? ": " + r.reason : "") },
           shape(level), `${r.integration} ${r.state.toUpperCase()}${why}` +
                         (r.waitingAlerts ? ` · ${r.waitingAlerts} alert${r.waitingAlerts > 1 ? "s" : ""} wait` : ""));
}

// ------------------------------------------------------------------ views

function renderTotals(s) {
  const t = s.total, box = document.getElementById("totals");
  box.replaceChildren(...[
    h("span", { class: "pill lv-" + t.level, id: "total-level", dataset: { level: t.level } }, shape(t.level), WORD[t.level]),
    h("span", { class: "pill lv-critical", title: "critical firing" }, shape("critical"), t.critical + " critical"),
    h("span", { class: "pill lv-warning", title: "warning firing" }, shape("warning"), t.warning + " warning"),
    h("span", { class: "pill", title: "info firing" }, t.info + " info"),
    h("span", { class: "pill lv-muted", title: "silenced" }, shape("muted"), t.silenced + " silenced"),
    h("span", { class: "pill lv-muted", id: "total-inhibited", title: "inhibited (a firing alert mutes them)" },
      shape("muted"), t.inhibited + " inhibited"),
    t.undelivered ? h("span", { class: "pill lv-critical", id: "total-undelivered",
                                title: "a receiver's latest notification of them failed (see the drill-down)" },
                      shape("critical"), t.undelivered + " undelivered") : null,
    s.incidents && s.incidents.open ? h("span", { class: "pill lv-critical" }, s.incidents.open + " incidents") : null,
    ...(s.receivers || []).map(receiverPill),
  ].filter(Boolean));
  document.body.dataset.firing = t.firing;
  document.body.dataset.version = s.version;
}

function cellButton(view, row, col, c, label) {
  const level = c ? c.level : st.summary && !st.summary.caughtUp ? "unknown" : "ok";  // not OK before caught up
  const sel = st.drill && st.drill.view === view && st.drill.row === row && (st.drill.col || null) === (col || null);
  return h("button", {
    type: "button", class: "cell lv-" + level + (c && c.firing ? "" : " empty") + (sel ? " selected" : ""),
    dataset: { view, row, col: col || "", ...(c ? cellData(c) : { level, firing: 0 }) },
    "aria-label": `${label}: ${WORD[level]}, ${c ? countsText(c) : "no alert"}`,
    onclick: () => openDrill({ view, row, col, cell: c ? c.id : null, title: label, offset: 0 }),
  }, h("span", { class: "word lv-" + level }, shape(level), WORD[level]),
     h("span", { class: "counts" }, c && c.firing ? countsText(c) : "—"));
}

// a cluster's row of the grid: its cells (summary's or found by name, with the same ids), one per layer
function clusterRow(cl, cells, layers, inc) {
  return h("tr", {}, h("th", { scope: "row" }, cl, inc ? h("div", { class: "lv-critical" }, inc + " open incident(s)") : null),
    layers.map(l => h("td", {}, cellButton("grid", cl, l.id, cells.get(cl + "\u0000" + l.id), cl + " / " + l.title))));
}

function cellMap(cells) {
  return new Map(cells.map(c => [c.row + "\u0000" + c.col, c]));
}

function renderGrid(s) {
  const table = document.getElementById("grid");
  const head = h("tr", {}, h("th", { scope: "col" }, "cluster"), s.layers.map(l => h("th", { scope: "col" }, l.title)));
  const found = st.find && st.find.page;
  let rows;
  if (found) {  // the clusters asked for by name, or the ones after the worst: their cells came with them
    rows = found.clusters.map(c => clusterRow(c.cluster, cellMap(c.cells), s.layers, c.incidents));
  } else {
    const cells = cellMap(s.grid);
    rows = s.clusters.map(cl => clusterRow(cl, cells, s.layers, (s.incidents.byCluster || {})[cl]));
    // a push carries the worst clusters only: the rest are counted, and how many of them are red or yellow; the
    // row lists them a page at a time (asked for from the server: the push stays bounded)
    const more = s.clustersMore || 0, ml = s.clustersMoreLevels || { critical: 0, warning: 0 };
    if (more) rows.push(h("tr", { class: "more-clusters" }, h("td", {
      colspan: String(s.layers.length + 1), class: "more" + (ml.critical ? " lv-critical" : ml.warning ? " lv-warning" : ""),
      dataset: { more, critical: ml.critical, warning: ml.warning } },
      h("button", { type: "button", class: "more-open", title: "list them, worst first",
                    onclick: () => openFind("", s.clusters.length) },
        `+ ${more} more cluster${more > 1 ? "s" : ""} (${ml.critical} critical, ${ml.warning} warning, ` +
        `${more - ml.critical - ml.warning} OK; the worst ${s.clusters.length} are shown)`))));
  }
  table.tHead.replaceChildren(head);
  table.tBodies[0].replaceChildren(...rows);
  document.getElementById("grid-empty").hidden = s.clusters.length > 0 || !!st.find;
  renderFindBar(found);
}

// ------------------------------------------------------------------ clusters by name (beyond the worst ones too)

function renderFindBar(found) {
  const range = document.getElementById("find-range"), f = st.find;
  for (const id of ["find-prev", "find-next", "find-clear"]) document.getElementById(id).hidden = !f;
  if (!f) { range.textContent = ""; delete range.dataset.total; return; }
  if (!found) return;  // asked; the answer is on its way (or said why it failed)
  const last = found.offset + found.clusters.length;
  range.dataset.total = found.total;
  range.textContent = found.total === 0 ? `no cluster name contains "${f.q}"`
    : `clusters ${found.offset + 1}–${last} of ${found.total}` + (f.q ? ` whose name contains "${f.q}"` : "") +
      ", worst first";
  document.getElementById("find-prev").disabled = found.offset <= 0;
  document.getElementById("find-next").disabled = last >= found.total;
}

function openFind(q, offset) {
  if (!q && offset === null) { closeFind(); return; }
  st.find = { q, offset: offset || 0, page: null };
  document.getElementById("find-range").textContent = "finding…";
  if (document.getElementById("cluster-find").value !== q) document.getElementById("cluster-find").value = q;
  loadFind();
}

function closeFind() {
  st.find = null;
  document.getElementById("cluster-find").value = "";
  if (st.summary) render(st.summary);
}

async function loadFind() {
  const f = st.find;
  if (!f) return;
  const version = st.summary ? st.summary.version : -1;
  let page;
  try {
    page = await getJSON("/api/clusters?" + new URLSearchParams({ q: f.q, offset: f.offset, limit: FIND_PAGE }));
  } catch (e) {
    if (st.find === f) document.getElementById("find-range").textContent = "could not find the clusters: " + e.message;
    return;
  }
  if (st.find !== f) return;  // typed on since, or closed
  st.findVersion = version;
  f.offset = page.offset;  // the server moves an offset past the end back to the last page
  f.page = page;
  if (st.summary) render(st.summary);
}

function renderTeams(s) {
  const rows = s.teams.map(t => h("tr", {},
    h("th", { scope: "row" }, h("div", { class: "team-head" }, t.team, cellButton("team", t.team, null, t, t.team))),
    h("td", {}, h("div", { class: "chips" }, t.namespaces.map(n => h("button", {
      type: "button", class: "chip lv-" + n.level, dataset: { view: "team", row: t.team, col: n.ns, ...cellData(n) },
      "aria-label": `${t.team} / ${n.ns}: ${WORD[n.level]}, ${countsText(n)}`,
      onclick: () => openDrill({ view: "team", row: t.team, col: n.ns, cell: n.id, title: t.team + " / " + n.ns, offset: 0 }),
    }, h("span", { class: "lv-" + n.level }, shape(n.level)), n.ns,
       h("span", { class: "n" }, WORD[n.level] + " " + (n.critical + n.warning + n.info) + (n.silenced ? " +" + n.silenced + " silenced" : "") + (n.inhibited ? " +" + n.inhibited + " inhibited" : "")))),
      // a push carries the worst namespaces of a team only: the rest are counted (the team's own cell drills into all)
      t.namespacesMore ? h("span", { class: "more", dataset: { more: t.namespacesMore } },
                           `+ ${t.namespacesMore} more namespace${t.namespacesMore > 1 ? "s" : ""}`) : null))));
  if (s.teamsMore) rows.push(h("tr", { class: "more-teams" }, h("td", { colspan: "2", class: "more", dataset: { more: s.teamsMore } },
    `+ ${s.teamsMore} more team${s.teamsMore > 1 ? "s" : ""} with alerts firing (the worst ${s.teams.length} are shown)`)));
  document.getElementById("teams").tBodies[0].replaceChildren(...rows);
  document.getElementById("team-empty").hidden = s.teams.length > 0;
}

function render(s) {
  const t0 = performance.now();
  st.summary = s;
  // until the board has read the backlog, nothing is green: the total says LOADING and empty cells are grey
  document.body.classList.toggle("loading", !s.caughtUp);
  for (const id of ["grid-empty", "team-empty"])
    document.getElementById(id).textContent = s.caughtUp ? "No alert firing." : "Reading the alerts backlog…";
  renderTotals(s);
  if (st.view === "grid") renderGrid(s); else renderTeams(s);
  st.renders++;
  window.__board.renders = st.renders;
  window.__board.lastRenderMs = performance.now() - t0;
  if (window.__board.firstRenderMs === null) {
    window.__board.firstRenderMs = performance.now();
    window.__board.firstRenderFiring = s.total.firing;
  }
  document.body.dataset.caughtUp = s.caughtUp ? "1" : "0";
  if (st.drill && s.version !== st.drillVersion) schedule("drill", loadDrill);
  if (st.find && st.find.page && s.version !== st.findVersion) schedule("find", loadFind);  // its cells change too
}

function setView(view) {
  st.view = view;
  for (const v of ["grid", "team"]) {
    document.getElementById("view-" + v).hidden = v !== view;
    document.getElementById("tab-" + v).setAttribute("aria-selected", String(v === view));
  }
  if (st.summary) render(st.summary);
}

// ------------------------------------------------------------------ drill-down

function openDrill(d) {
  st.drill = d;
  if (st.summary) render(st.summary);
  loadDrill();
}

// at most one reload of each kind pending: a burst of pushes costs one request
function schedule(name, fn, ms = 500) {
  if (st.timers[name]) return;
  st.timers[name] = setTimeout(() => { st.timers[name] = null; fn(); }, ms);
}

// the board's JSON, or an Error saying why not (the board's own error, or the HTTP status of a proxy's page)
async function getJSON(url) {
  const r = await fetch(url);
  if (!r.ok) {
    let why = "HTTP " + r.status;
    try { why += ": " + (await r.json()).error; } catch (e) { /* not the board's JSON (a proxy's page) */ }
    throw new Error(why);
  }
  return r.json();
}

async function loadDrill() {
  const d = st.drill;
  if (!d) return;
  const t0 = performance.now();
  const version = st.summary ? st.summary.version : -1;
  // by the cell's id when it has alerts (a row or column name can be longer than a URL may be)
  const q = d.cell ? new URLSearchParams({ cell: d.cell, offset: d.offset, limit: PAGE })
                   : new URLSearchParams({ view: d.view, row: d.row, offset: d.offset, limit: PAGE });
  if (!d.cell && d.col) q.set("col", d.col);
  let page;
  try {
    page = await getJSON("/api/alerts?" + q);
  } catch (e) {
    if (st.drill === d) drillError(d, e.message);  // said nothing: the panel stayed shut or showed the last cell
    return;
  }
  if (st.drill !== d) return;
  st.drillVersion = version;
  d.offset = page.offset;  // the server moves an offset past the end back to the last page
  renderDrill(d, page);
  window.__board.drills++;
  window.__board.lastDrillMs = performance.now() - t0;
}

function drillError(d, why) {
  const box = document.getElementById("drill");
  box.hidden = false;
  box.dataset.error = why;
  document.getElementById("drill-title").textContent = d.title;
  document.getElementById("drill-range").textContent = "could not load the alerts: " + why;
  document.getElementById("drill-incidents").replaceChildren();
  document.getElementById("drill-list").replaceChildren();
}

function renderDrill(d, page) {
  const box = document.getElementById("drill");
  box.hidden = false;
  delete box.dataset.error;
  box.dataset.total = page.total;
  box.dataset.row = d.row;
  box.dataset.col = d.col || "";
  document.getElementById("drill-title").textContent = d.title;
  const last = Math.min(page.offset + page.alerts.length, page.total);
  document.getElementById("drill-range").textContent =
    page.total ? `${page.offset + 1}–${last} of ${page.total} firing` : "no alert firing";
  document.getElementById("drill-prev").disabled = page.offset <= 0;
  document.getElementById("drill-next").disabled = last >= page.total;
  document.getElementById("drill-incidents").replaceChildren(...page.incidents.map(i =>
    h("div", { class: "incident" }, h("b", {}, "incident "), i.title || i.summary || i.id,
      i.status ? " · " + i.status : "", i.startsAt ? " · since " + i.startsAt : "")));
  document.getElementById("drill-list").replaceChildren(...page.alerts.map(alertItem));
}

function ago(iso) {
  if (!iso) return "";
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 120) return Math.round(s) + " s ago";
  if (s < 7200) return Math.round(s / 60) + " min ago";
  if (s < 172800) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}

// a link only to a web page: an alert's generatorURL is whatever its sender wrote (javascript:, data: would run
// in the board's origin when clicked, stopped only by the CSP); anything else is shown as text
function webURL(u) {
  try { return ["http:", "https:"].includes(new URL(u, location.href).protocol); } catch (e) { return false; }
}

function alertItem(a) {
  const lab = a.labels, silenced = a.silencedBy.length > 0, inhibited = !silenced && (a.inhibitedBy || []).length > 0;
  const muted = silenced || inhibited;
  const level = a.severity === "info" ? "ok" : a.severity;
  const receivers = a.receivers === null ? "unknown (no routing file)" : (a.receivers.join(", ") || "none");
  return h("li", {
    class: "alert sev-" + a.severity + (silenced ? " silenced" : "") + (inhibited ? " inhibited" : ""),
    dataset: { fingerprint: a.fingerprint, silenced: silenced ? "1" : "0", inhibited: inhibited ? "1" : "0",
               severity: a.severity },
  },
    h("div", { class: "top" },
      h("span", { class: "lv-" + (muted ? "muted" : level) }, shape(muted ? "muted" : level)),
      h("span", { class: "sev" }, (a.severity || "").toUpperCase()),
      h("span", { class: "name" }, lab.alertname || "(no alertname)"),
      h("span", { class: "state" }, silenced ? "SILENCED" : inhibited ? "INHIBITED" : "FIRING"),
      h("span", { class: "when", title: a.startsAt }, "since " + (a.startsAt || "?") + " (" + ago(a.startsAt) + ")")),
    h("div", { class: "labels" }, Object.keys(lab).sort().map(k => h("span", { class: "label" }, k + "=" + lab[k]))),
    Object.entries(a.annotations).map(([k, v]) => h("div", { class: "ann" }, h("b", {}, k + ": "), v)),
    h("div", { class: "foot" },
      h("span", {}, "receivers: " + receivers),
      h("span", { class: "notified" }, "notified: " + ((a.notified || []).filter(n => !n.failed && !n.waiting)
                                                      .map(n => n.receiver + " (" + n.at + ")").join(", ") || "not yet")),
      (a.notified || []).filter(n => n.waiting).map(n => h("span", { class: "waiting", title: n.waiting },
        "WAITING for " + n.receiver + " (" + n.at + "): " + n.waiting)),
      (a.notified || []).filter(n => n.failed).map(n => h("span", { class: "undelivered", title: n.failed },
        "NOT DELIVERED to " + n.receiver + " (" + n.at + "): " + n.failed)),
      h("span", {}, "source: " + (a.source || "?")),
      a.generatorURL ? (webURL(a.generatorURL) ? h("a", { href: a.generatorURL, rel: "noreferrer" }, "source link")
                                              : h("span", { class: "generator" }, "source link: " + a.generatorURL)) : null,
      st.writable ? h("button", { type: "button", class: "silence", onclick: () => openSilence(a) }, "Silence…") : null,
      (a.inhibitedBy || []).map(fp => h("span", { class: "inhibit-id", title: fp }, "inhibited by " + fp.slice(0, 8))),
      a.silencedBy.map(id => h("span", { class: "silence-id" }, "silenced by " + id.slice(0, 8) + " ",
        st.writable ? h("button", { type: "button", class: "expire", dataset: { silence: id },
                                    onclick: () => expireSilence(id) }, "expire") : null))));
}

// ------------------------------------------------------------------ silences (writes need the token)

function token() { return document.getElementById("token").value.trim(); }

async function write(method, url, body) {
  const r = await fetch(url, {
    method, body: body ? JSON.stringify(body) : undefined,
    headers: { "Content-Type": "application/json", Authorization: "Bearer " + token() },
  });
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = { error: text }; }
  if (!r.ok) throw new Error((data && data.error) || "HTTP " + r.status);
  return data;
}

function openSilence(a) {
  st.dialogAlert = a;
  const box = document.getElementById("silence-matchers");
  box.replaceChildren(...Object.keys(a.labels).sort().map(k => h("label", {},
    h("input", { type: "checkbox", checked: true, dataset: { name: k, value: a.labels[k] } }),
    " " + k + '="' + a.labels[k] + '"')));
  document.getElementById("silence-error").textContent = "";
  document.getElementById("silence-dialog").showModal();
  document.getElementById("silence-comment").focus();
}

async function submitSilence(ev) {
  ev.preventDefault();
  const err = document.getElementById("silence-error");
  const matchers = [...document.querySelectorAll("#silence-matchers input:checked")].map(i =>
    ({ name: i.dataset.name, value: i.dataset.value, isRegex: false, isEqual: true }));
  const now = Date.now();
  const body = {
    matchers,
    startsAt: new Date(now).toISOString(),
    endsAt: new Date(now + 1000 * Number(document.getElementById("silence-duration").value)).toISOString(),
    createdBy: document.getElementById("silence-author").value.trim(),
    comment: document.getElementById("silence-comment").value.trim(),
  };
  try {
    const out = await write("POST", "/alertmanager/api/v2/silences", body);
    document.getElementById("silence-dialog").close();
    document.body.dataset.lastSilence = out.silenceID;
    loadDrill();
  } catch (e) {
    err.textContent = e.message;
  }
}

async function expireSilence(id) {
  try {
    await write("DELETE", "/alertmanager/api/v2/silence/" + encodeURIComponent(id));
    loadDrill();
  } catch (e) {
    alert("could not expire " + id + ": " + e.message);
  }
}

// ------------------------------------------------------------------ live updates and freshness

function tick() {
  const f = document.getElementById("freshness");
  if (st.lastMsg === null) { f.textContent = "waiting for data…"; return; }
  const s = Math.round((Date.now() - st.lastMsg) / 1000);
  const caught = st.summary && !st.summary.caughtUp ? " (reading the backlog)" : "";
  f.textContent = "updated " + (s < 120 ? s + " s" : Math.round(s / 60) + " min") + " ago" + caught;
  f.dataset.age = s;
}

function connect() {
  const conn = document.getElementById("conn");
  const es = new EventSource("/api/events");
  es.addEventListener("open", () => { conn.textContent = "live"; conn.className = "conn live"; });
  es.addEventListener("error", () => { conn.textContent = "disconnected, retrying"; conn.className = "conn down"; });
  es.addEventListener("summary", e => {
    st.lastMsg = Date.now();
    conn.textContent = "live"; conn.className = "conn live";
    render(JSON.parse(e.data));
    tick();
  });
}

async function init() {
  document.getElementById("tab-grid").addEventListener("click", () => setView("grid"));
  document.getElementById("tab-team").addEventListener("click", () => setView("team"));
  document.getElementById("drill-close").addEventListener("click", () => {
    st.drill = null; document.getElementById("drill").hidden = true; if (st.summary) render(st.summary);
  });
  document.getElementById("drill-prev").addEventListener("click", () => {
    if (st.drill) { st.drill.offset = Math.max(0, st.drill.offset - PAGE); loadDrill(); }
  });
  document.getElementById("drill-next").addEventListener("click", () => {
    if (st.drill) { st.drill.offset += PAGE; loadDrill(); }
  });
  const find = document.getElementById("cluster-find");
  find.addEventListener("input", () => {  // asked once typing pauses; an empty box is the worst clusters again
    clearTimeout(st.timers.typing);
    st.timers.typing = setTimeout(() => openFind(find.value.trim(), null), 250);
  });
  find.addEventListener("keydown", e => { if (e.key === "Escape") closeFind(); });
  document.getElementById("find-prev").addEventListener("click", () => {
    if (st.find) openFind(st.find.q, Math.max(0, st.find.offset - FIND_PAGE));
  });
  document.getElementById("find-next").addEventListener("click", () => {
    if (st.find) openFind(st.find.q, st.find.offset + FIND_PAGE);
  });
  document.getElementById("find-clear").addEventListener("click", closeFind);
  document.getElementById("silence-form").addEventListener("submit", submitSilence);
  document.getElementById("silence-cancel").addEventListener("click", () => document.getElementById("silence-dialog").close());
  const tok = document.getElementById("token");
  tok.value = sessionStorage.getItem("kubesight-board-token") || "";
  tok.addEventListener("change", () => sessionStorage.setItem("kubesight-board-token", tok.value));
  try {
    const s = await (await fetch("/api/summary")).json();
    st.writable = s.writable; st.routing = s.routing;
    document.getElementById("mode").textContent = s.writable ? "silences enabled (token)" : "read-only";
    document.getElementById("token-box").hidden = !s.writable;
    document.body.dataset.writable = s.writable ? "1" : "0";
    if (st.summary === null) { st.lastMsg = Date.now(); render(s); }
  } catch (e) { /* the event stream will bring it */ }
  openLinked();
  connect();
  setInterval(tick, 1000);
}

// a link that names a cell (an alert's generatorURL: "Source" in a notification) opens its drill-down:
// /?view=team&row=<team>&col=<namespace>, the same query the page asks /api/alerts with
function openLinked() {
  const p = new URLSearchParams(location.search);
  const view = p.get("view"), row = p.get("row"), col = p.get("col") || "";
  if (!row || (view !== "grid" && view !== "team")) return;
  setView(view);
  openDrill({ view, row, col, cell: null, title: col ? row + " / " + col : row, offset: 0 });
}

document.addEventListener("DOMContentLoaded", init);
