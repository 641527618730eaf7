// chatter dashboard: live from the node's API, no framework.
//   The event feed: GET /v1/events/stream (server-sent events, EventSource), each row as it
//   happens; the browser reconnects by itself, and the node replays what it missed.
//   The tables: GET /v1/health, /v1/members, /v1/roles, /v1/devices at once when an event
//   says they changed (a member, role or device event), and every POLL_MS anyway (the
//   "last heard" times, changes seen without an event here).
// Every value from the API goes into the page as text (textContent), never as HTML.
// A node whose API listens beyond loopback wants its token for every read: open the page as
// HOST:PORT/#token=TOKEN (a fragment never leaves the browser); the page sends it as
// Authorization: Bearer, and as ?access_token= for the event stream (EventSource sends no headers).
"use strict";

const POLL_MS = 5000;
const REFRESH_DELAY_MS = 100; // events come in bursts: one refresh for a burst
const MAX_EVENTS = 200; // rows kept in the feed

let lastSeq = 0; // highest event seq shown
let nodeId = null; // the node's id: a restarted node numbers its events from 1 again
let stream = null; // the EventSource of the feed
let pollTimer = null;
let refreshTimer = null;
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

function clock(unixSeconds) {
  return new Date(unixSeconds * 1000).toLocaleTimeString([], { hour12: false });
}

function renderHealth(h) {
  document.title = `chatter: ${h.name}`;
  document.getElementById("self-name").textContent = h.name;
  document.getElementById("self-addr").textContent = `${h.addr} · incarnation ${h.incarnation}`;
  const badge = document.getElementById("health");
  badge.dataset.status = h.status;
  badge.textContent = h.status;
  const counts = Object.entries(h.members).map(([state, n]) => `${n} ${state}`);
  document.getElementById("counts").textContent = counts.join(", ");
  document.getElementById("reasons").textContent = (h.reasons || []).join("; ");
}

function tagChips(tags) {
  if (!tags || typeof tags !== "object") return [];
  return Object.entries(tags)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => el("span", { class: "tag" }, `${k}=${v}`));
}

function renderMembers(rows, selfName) {
  const body = el("tbody");
  for (const m of rows) {
    const tr = el(
      "tr",
      { class: `member state-${m.state}${m.name === selfName ? " self" : ""}`, "data-name": m.name, "data-state": m.state },
      el("td", {}, m.name),
      el("td", { class: "state" }, el("span", { class: "badge" }, m.state)),
      el("td", {}, m.addr),
      el("td", { class: "tags" }, ...tagChips(m.tags)),
      el("td", { class: "num heard" }, m.name === selfName ? "—" : seconds(m.last_heard_s)),
      el("td", { class: "num" }, seconds(m.state_since_s)),
      el("td", { class: "num" }, m.incarnation),
    );
    tr.title = `id ${m.id}`;
    body.append(tr);
  }
  document.querySelector("#members tbody").replaceWith(body);
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
  document.querySelector("#devices tbody").replaceWith(body);
}

function renderRoles(rows) {
  const body = el("tbody");
  for (const r of rows) {
    const cands = Object.entries(r.candidates).map(([n, p]) => `${n}:${p}`).join(" ");
    body.append(
      el(
        "tr",
        { class: "role", "data-role": r.role, "data-holder": r.holder ?? "" },
        el("td", {}, r.role),
        el("td", {}, r.holder ?? "-", r.held_here ? el("span", { class: "muted" }, " (this node)") : ""),
        el("td", {}, String(r.epoch)),
        el("td", { class: "muted" }, r.since ? clock(r.since) : "-"),
        el("td", { class: "muted" }, cands || "-"),
      ),
    );
  }
  document.querySelector("#roles tbody").replaceWith(body);
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

function appendEvents(rows) {
  const list = document.getElementById("events");
  for (const e of rows.slice(-MAX_EVENTS)) {
    list.prepend(
      el(
        "li",
        { "data-seq": e.seq, "data-kind": e.kind, "data-origin": e.origin },
        el("span", { class: "time" }, clock(e.received_at)),
        el("span", { class: "kind" }, e.kind),
        el("span", { class: "text" }, summary(e)),
      ),
    );
  }
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
  if (rows.length) lastSeq = Math.max(lastSeq, rows[rows.length - 1].seq);
}

function showUnreachable(err) {
  const badge = document.getElementById("health");
  badge.dataset.status = "unreachable";
  badge.textContent = "unreachable";
  document.getElementById("reasons").textContent = String(err);
}

function openStream() {
  // From the first row the node still holds; on a reconnection the browser sends Last-Event-ID.
  if (stream) stream.close();
  const auth = token ? `&access_token=${encodeURIComponent(token)}` : "";
  stream = new EventSource(`/v1/events/stream?since=0${auth}`);
  stream.onmessage = (msg) => {
    const e = JSON.parse(msg.data);
    if (e.seq <= lastSeq) return; // already shown
    appendEvents([e]);
    if (/^(member|role)-|^device$/.test(e.kind)) scheduleRefresh();
  };
  stream.onerror = () => scheduleRefresh(); // the node went away, or is back: the tables say which
}

function scheduleRefresh() {
  if (refreshTimer === null) refreshTimer = setTimeout(refresh, REFRESH_DELAY_MS);
}

async function refresh() {
  clearTimeout(refreshTimer);
  refreshTimer = null;
  clearTimeout(pollTimer);
  try {
    const health = await getJSON("/v1/health");
    if (health.id !== nodeId) {
      // First look, or the node was restarted: start the feed again.
      nodeId = health.id;
      lastSeq = 0;
      document.getElementById("events").replaceChildren();
      openStream();
    }
    const [members, roles, devices] = await Promise.all([
      getJSON("/v1/members"),
      getJSON("/v1/roles"),
      getJSON("/v1/devices"),
    ]);
    renderHealth(health);
    renderMembers(members, health.name);
    renderRoles(roles);
    renderDevices(devices);
    document.getElementById("updated").textContent = `updated ${clock(Date.now() / 1000)}`;
  } catch (err) {
    showUnreachable(err);
  } finally {
    clearTimeout(pollTimer); // another refresh may have run meanwhile: one timer only
    pollTimer = setTimeout(refresh, POLL_MS);
  }
}

refresh();
