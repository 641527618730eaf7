// chatter dashboard: live from the node's API, no framework, no polling.
//   The event feed: GET /v1/events/stream (server-sent events, EventSource), each row as it
//   happens; the browser reconnects by itself, the page reopens a stream the browser gave up on.
//   The tables: fetched once at start and after each (re)connection of the stream, then again
//   only when an event says they changed: a member event refetches /v1/members, /v1/roles and
//   /v1/health; a role event /v1/roles and /v1/health; a device event /v1/devices; any other
//   event /v1/health (its counters). Between two fetches the durations ("last heard" of a member
//   not alive, "in state for", uptime) move on with the browser's clock: an alive member silent
//   for long would have become suspect, an event that refetches the table.
// Every value from the API goes into the page as text (textContent), never as HTML.
// A node whose API listens beyond loopback wants its token for every read: open the page as
// HOST:PORT/#token=TOKEN (a fragment never leaves the browser); the page sends it as
// Authorization: Bearer, and as ?access_token= for the event stream (EventSource sends no headers).
"use strict";

const REFRESH_DELAY_MS = 100; // events come in bursts: one fetch per table for a burst
const TICK_MS = 1000; // redraw the durations (no request)
const REOPEN_MS = [1000, 2000, 4000, 8000, 16000]; // waits before reopening a closed stream
const MAX_EVENTS = 200; // rows kept in the feed
// Counters always shown (0 when the node has not counted any yet); "bad" ones turn red above 0.
const MAIN_COUNTERS = [
  ["datagrams_in", "datagrams in"], ["datagrams_out", "datagrams out"],
  ["bytes_in", "bytes in"], ["bytes_out", "bytes out"],
  ["delivered", "delivered"], ["duplicates", "duplicates"],
  ["suspicions", "suspicions"], ["refutations", "refutations"], ["deaths", "deaths"],
  ["malformed", "malformed", "bad"], ["starved", "timers starved", "bad"],
  ["send_errors", "send errors", "bad"], ["handler_failures", "handler failures", "bad"],
  ["internal_errors", "internal errors", "bad"],
];
const ALL_TABLES = ["health", "members", "roles", "devices"];
const REFETCH = { member: ["members", "roles", "health"], role: ["roles", "health"], device: ["devices"] };

let lastSeq = 0; // highest event seq shown
let nodeId = null; // the node's id: a restarted node numbers its events from 1 again
let selfName = null;
let stream = null; // the EventSource of the feed
let opened = false; // the stream was open once: a later open is a reconnection
const drawn = new Set(); // the tables drawn at least once
let reopenTry = 0;
let refreshTimer = null;
let fetchError = null; // why the last refresh failed, until one succeeds
const pending = new Set(); // tables to fetch at the next refresh
const generation = {}; // table → number of its latest fetch
const token = new URLSearchParams(location.hash.slice(1)).get("token");

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : String(c));
  return node;
}

const $ = (sel) => document.querySelector(sel);

async function getJSON(path) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const r = await fetch(path, { cache: "no-store", headers });
  if (r.status === 401) {
    throw new Error(
      "this node wants its API token for reads: open this page as /#token=TOKEN " +
        "(the token is in the file the node wrote, or its --http-token-file)",
    );
  }
  // /v1/health answers 503, with the same JSON body, when the node is degraded.
  if (!r.ok && !(r.status === 503 && path === "/v1/health")) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

function seconds(s) {
  if (s === null || s === undefined) return "never";
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function clock(unixSeconds) {
  return new Date(unixSeconds * 1000).toLocaleTimeString([], { hour12: false });
}

// A duration that moves on with the browser's clock: its value at the fetch, and when that was.
function ticking(s, cls, tag = "td") {
  const cell = el(tag, { class: `num ${cls}` }, seconds(s));
  if (s !== null && s !== undefined) {
    cell.dataset.base = s;
    cell.dataset.at = performance.now();
  }
  return cell;
}

function tick() {
  for (const cell of document.querySelectorAll("[data-base]")) {
    cell.textContent = seconds(Number(cell.dataset.base) + (performance.now() - Number(cell.dataset.at)) / 1000);
  }
}

// Show a table (hidden before its first answer) or the line that replaces it.
function showTable(id, rows, emptyText) {
  $(`#${id}`).hidden = rows === 0;
  const empty = $(`#${id}-empty`);
  empty.hidden = rows !== 0;
  empty.textContent = emptyText;
}

function renderHealth(h) {
  selfName = h.name;
  document.title = `chatter: ${h.name}`;
  $("#self-name").textContent = h.name;
  $("#self-addr").textContent = `${h.addr} · incarnation ${h.incarnation}`;
  const badge = $("#health");
  badge.dataset.status = h.status;
  badge.textContent = h.status;
  $("#counts").textContent = Object.entries(h.members).map(([state, n]) => `${n} ${state}`).join(", ");
  $("#reasons").textContent = [...(h.reasons || []), ...(h.warnings || [])].join("; ");
  const encryption = `, encryption ${h.encryption_mode ?? h.encryption}`;
  $("#uptime").replaceChildren("up ", ticking(h.uptime_s, "uptime", "span"), encryption);
  renderCounters(h.counters || {});
}

function renderCounters(counters) {
  const tiles = MAIN_COUNTERS.map(([key, label, bad]) => {
    const n = counters[key] ?? 0;
    const shown = key.startsWith("bytes_") ? bytes(n) : n.toLocaleString("en");
    return el(
      "div",
      { class: `counter${bad && n > 0 ? " bad" : ""}`, "data-counter": key, "data-value": n },
      el("span", { class: "value" }, shown),
      el("span", { class: "label" }, label),
    );
  });
  $("#counters").replaceChildren(...tiles);
  $("#counters-empty").hidden = true;
  const rest = Object.entries(counters).sort(([a], [b]) => (a < b ? -1 : 1));
  const body = el("tbody");
  for (const [k, v] of rest) body.append(el("tr", { "data-counter": k }, el("td", {}, k), el("td", { class: "num" }, v)));
  $("#all-counters tbody").replaceWith(body);
  const details = $("#all-counters");
  details.hidden = false;
  details.querySelector("summary").textContent = `all counters (${rest.length})`;
}

function tagChips(tags) {
  if (!tags || typeof tags !== "object") return [];
  return Object.entries(tags)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => el("span", { class: "tag" }, `${k}=${v}`));
}

function renderMembers(rows) {
  const body = el("tbody");
  for (const m of rows) {
    const self = m.name === selfName;
    const tr = el(
      "tr",
      { class: `member state-${m.state}${self ? " self" : ""}`, "data-name": m.name, "data-state": m.state },
      el("td", {}, m.name),
      el("td", { class: "state" }, el("span", { class: "badge" }, m.state)),
      el("td", {}, m.addr),
      el("td", { class: "tags" }, ...tagChips(m.tags)),
      // An alive member is heard all the time: its figure is as of the fetch (it would be suspect otherwise).
      self ? el("td", { class: "num" }, "—") : m.state === "alive" ? el("td", { class: "num heard" }, seconds(m.last_heard_s)) : ticking(m.last_heard_s, "heard"),
      ticking(m.state_since_s, "since"),
      el("td", { class: "num" }, m.incarnation),
    );
    tr.title = `id ${m.id}`;
    tr.dataset.text = [m.name, m.state, m.addr, ...Object.entries(m.tags || {}).map(([k, v]) => `${k}=${v}`)].join(" ").toLowerCase();
    body.append(tr);
  }
  $("#members tbody").replaceWith(body);
  showTable("members", rows.length, "No members.");
  applyFilter();
}

function applyFilter() {
  const words = $("#member-filter").value.toLowerCase().split(/\s+/).filter(Boolean);
  const rows = document.querySelectorAll("#members tbody tr");
  let shown = 0;
  for (const tr of rows) {
    tr.hidden = !words.every((w) => tr.dataset.text.includes(w));
    if (!tr.hidden) shown++;
  }
  $("#member-shown").textContent = words.length ? `(${shown} of ${rows.length} shown)` : `(${rows.length})`;
}

function metricText(metrics) {
  // {"load": {"Text": "0.3"}} → "load=0.3"
  return Object.entries(metrics || {})
    .map(([k, v]) => `${k}=${v && typeof v === "object" ? Object.values(v).join(",") : v}`)
    .join("  ");
}

function renderDevices(rows) {
  const body = el("tbody");
  for (const d of rows) {
    body.append(
      el(
        "tr",
        { class: "device", "data-name": d.name, "data-origin": d.origin },
        el("td", {}, d.name),
        el("td", {}, d.description ?? ""),
        el("td", {}, metricText(d.metrics)),
        el("td", { class: "muted" }, d.origin),
      ),
    );
  }
  $("#devices tbody").replaceWith(body);
  showTable("devices", rows.length, "No devices.");
}

function hereText(r) {
  if (r.held_here) return "held here";
  if (r.waiting_for_lock) return "waiting for the lock";
  return r.why_not_here ? `not here: ${r.why_not_here}` : "";
}

function renderRoles(rows) {
  const body = el("tbody");
  for (const r of rows) {
    const cands = Object.entries(r.candidates).map(([n, p]) => `${n}:${p}`).join(" ");
    const holderState = r.holder && r.holder_state && r.holder_state !== "alive" ? ` (${r.holder_state})` : "";
    body.append(
      el(
        "tr",
        { class: `role${r.held_here ? " held" : ""}`, "data-role": r.role, "data-holder": r.holder ?? "" },
        el("td", {}, r.role),
        el("td", {}, (r.holder ?? "-") + holderState),
        el("td", {}, String(r.epoch)),
        el("td", { class: "muted" }, r.since ? clock(r.since) : "-"),
        el("td", { class: "muted" }, cands || "-"),
        el("td", { class: "here", "data-why": r.why_not_here ?? "" }, hereText(r)),
      ),
    );
  }
  $("#roles tbody").replaceWith(body);
  showTable("roles", rows.length, "No roles: start nodes with --role NAME:PRIORITY or --roles PREFIXA..B.");
}

function summary(e) {
  if (e.kind === "role-acquired" || e.kind === "role-lost") {
    const p = e.payload;
    return `${p.role} ${e.kind === "role-acquired" ? "acquired by" : "lost by"} ${p.holder} (epoch ${p.epoch}): ${p.reason}`;
  }
  const p = e.payload || {};
  if (e.kind.startsWith("member-")) {
    let text = `${p.name} ${p.state} at ${p.addr} (incarnation ${p.incarnation})`;
    if (p.by) text += `, by ${p.by}`;
    if (p.after_s !== undefined) text += `, silent for ${p.after_s} s`;
    return text;
  }
  if (e.kind === "debug" && p.DebugMessage) return `"${p.DebugMessage.text}" from ${e.origin}`;
  if (e.kind === "device" && p.DeviceGossip) {
    const [variant, body] = Object.entries(p.DeviceGossip)[0];
    const extra = body.description ?? metricText(body.metrics);
    return `${variant} ${body.name}${extra ? ": " + extra : ""} (via ${e.origin})`;
  }
  const json = JSON.stringify(p);
  return `${json.length > 160 ? json.slice(0, 157) + "..." : json} from ${e.origin}`;
}

function appendEvent(e) {
  const list = $("#events");
  list.prepend(
    el(
      "li",
      { "data-seq": e.seq, "data-kind": e.kind, "data-origin": e.origin },
      el("span", { class: "time" }, clock(e.received_at)),
      el("span", { class: "kind" }, e.kind),
      el("span", { class: "text" }, summary(e)),
    ),
  );
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
  lastSeq = Math.max(lastSeq, e.seq);
}

function setLive(state, text) {
  const live = $("#live");
  live.dataset.live = state;
  live.textContent = text;
}

function showUnreachable(err) {
  const badge = $("#health");
  badge.dataset.status = "unreachable";
  badge.textContent = "unreachable";
  $("#reasons").textContent = String(err);
}

function openStream() {
  // From the first row the node still holds; on a reconnection the browser sends Last-Event-ID.
  if (stream) stream.close();
  const auth = token ? `&access_token=${encodeURIComponent(token)}` : "";
  stream = new EventSource(`/v1/events/stream?since=0${auth}`);
  stream.onopen = () => {
    reopenTry = 0;
    setLive("live", "live");
    // What happened while away (or what the first fetch, failed or still under way, did not draw).
    if (opened || drawn.size < ALL_TABLES.length) scheduleRefresh(...ALL_TABLES);
    opened = true;
  };
  stream.onmessage = (msg) => {
    const e = JSON.parse(msg.data);
    if (e.seq <= lastSeq) return; // already shown
    appendEvent(e);
    scheduleRefresh(...(REFETCH[e.kind.split("-")[0]] || ["health"]));
  };
  stream.onerror = () => {
    // The node went away (or refused the stream): say so; the browser retries by itself unless
    // it gave up (CLOSED), and then the page opens a new stream after a growing wait.
    // A failed fetch says more (e.g. that the node wants its token): keep its words.
    showUnreachable(fetchError ?? "the event stream broke: reconnecting");
    setLive("down", "reconnecting…");
    if (stream.readyState === EventSource.CLOSED) {
      setTimeout(openStream, REOPEN_MS[Math.min(reopenTry++, REOPEN_MS.length - 1)]);
    }
  };
}

function scheduleRefresh(...tables) {
  for (const t of tables) pending.add(t);
  if (refreshTimer === null) refreshTimer = setTimeout(refresh, REFRESH_DELAY_MS);
}

const FETCHERS = {
  members: ["/v1/members", renderMembers],
  roles: ["/v1/roles", renderRoles],
  devices: ["/v1/devices", renderDevices],
};

async function refresh() {
  refreshTimer = null;
  const tables = new Set(pending);
  pending.clear();
  try {
    if (tables.has("health") || selfName === null) {
      const health = await getJSON("/v1/health");
      renderHealth(health);
      drawn.add("health");
      if (health.id !== nodeId) {
        const first = nodeId === null;
        nodeId = health.id;
        if (!first) {
          // The node was restarted: its events are numbered from 1 again, and its tables are new.
          lastSeq = 0;
          $("#events").replaceChildren();
          for (const t of Object.keys(FETCHERS)) tables.add(t);
          openStream();
        }
      }
    }
    const wanted = Object.entries(FETCHERS).filter(([t]) => tables.has(t));
    const gens = wanted.map(([t]) => (generation[t] = (generation[t] || 0) + 1));
    const answers = await Promise.all(wanted.map(([, [path]]) => getJSON(path)));
    // Two refreshes may overlap: an answer older than one already drawn is not drawn.
    wanted.forEach(([t, [, render]], i) => {
      if (gens[i] !== generation[t]) return;
      render(answers[i]);
      drawn.add(t);
    });
    $("#updated").textContent = `updated ${clock(Date.now() / 1000)}`;
    fetchError = null;
  } catch (err) {
    fetchError = String(err);
    showUnreachable(err);
  }
}

$("#member-filter").addEventListener("input", applyFilter);
setInterval(tick, TICK_MS);
openStream();
scheduleRefresh(...ALL_TABLES);
