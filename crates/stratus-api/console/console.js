// The Stratus console: the databases, live, and one page per database with its last hour of
// samples and its events on the same time axis. Plain script, no build step; every request is
// the public API with the tab's token (README "Web console", docs/decisions.md).
"use strict";

const TOKEN_KEY = "stratus-token";
const view = document.getElementById("view");
const errorBox = document.getElementById("error");
let timer = null;
// Each page shown gets a number; a refresh that finishes after its page was left sees another
// number and drops what it read.
let shownPage = 0;
let plots = [];
// Which kind of error shows: a periodic refresh clears only its own, not an action's.
let errorFrom = null;

// A token handed over in the address (`/#token=…`, never sent to the server) is kept for this
// tab and removed from the address and its history.
(function takeTokenFromAddress() {
  const m = location.hash.match(/^#token=([^&]+)/);
  if (m) {
    try {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    } catch (e) {
      // A malformed address: the form asks for the token instead.
    }
    history.replaceState(null, "", location.pathname + "#/");
  }
})();

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function showError(message, from) {
  errorBox.textContent = message;
  errorBox.hidden = !message;
  errorFrom = message ? from : null;
}

class ApiError extends Error {}

async function api(method, path, body) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) throw new ApiError("no token");
  const resp = await fetch(path, {
    method,
    headers: Object.assign({ Authorization: "Bearer " + token },
      body === undefined ? {} : { "Content-Type": "application/json" }),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (resp.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    route();
    throw new ApiError("the token was refused; give another");
  }
  const text = await resp.text();
  const data = text ? JSON.parse(text) : null;
  if (!resp.ok) throw new ApiError(data && data.error ? data.error.message : resp.statusText);
  return data;
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

function stateBadge(state) {
  return el("span", { class: "state " + state, "data-state": state }, state);
}

function every(ms, f) {
  clearInterval(timer);
  const run = guarded(f, "refresh");
  run();
  timer = setInterval(run, ms);
}

// Runs `f`, showing its error; `from` names the source ("refresh" or "action"). A success
// clears the error shown only if it came from the same source.
function guarded(f, from = "action") {
  return async (...args) => {
    try {
      await f(...args);
      if (errorFrom === from) showError("");
    } catch (e) {
      showError(e.message, from);
    }
  };
}

// A new page: the old one's refreshes stop and its charts are released.
function newPage() {
  clearInterval(timer);
  for (const p of plots) p.destroy();
  plots = [];
  return ++shownPage;
}

// ---- the databases ----

async function listPage() {
  const page = newPage();
  const table = el("tbody", { id: "databases" });
  const secret = el("div", { id: "created" });
  const form = el("form", { class: "inline", id: "create" },
    el("input", { name: "name", placeholder: "name", required: true, pattern: "[a-z][a-z0-9-]{0,39}" }),
    el("select", { name: "tier" }, el("option", { value: "free" }, "free"), el("option", { value: "standard" }, "standard")),
    el("input", { name: "min", type: "number", min: 1, max: 16, placeholder: "min SCU" }),
    el("input", { name: "max", type: "number", min: 1, max: 16, placeholder: "max SCU" }),
    el("button", { type: "submit" }, "Create database"));
  form.addEventListener("submit", guarded(async (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    const req = { name: f.get("name"), tier: f.get("tier") };
    if (f.get("min")) req.min_scu = Number(f.get("min"));
    if (f.get("max")) req.max_scu = Number(f.get("max"));
    form.querySelector("button").disabled = true;
    try {
      const c = await api("POST", "/v1/databases", req);
      // Shown once: Stratus keeps only the password's hash.
      secret.replaceChildren(el("div", { class: "secret" },
        el("strong", {}, `Database ${c.name} created in ${c.ready_ms} ms. `),
        "Its password is shown only now: ", el("code", { id: "connection-string" }, c.connection_string)));
      form.reset();
      await refresh();
    } finally {
      form.querySelector("button").disabled = false;
    }
  }));
  view.replaceChildren(el("h1", {}, "Databases"), form, secret,
    el("table", {}, el("thead", {}, el("tr", {},
      ["Name", "State", "SCU", "Range", "Node", "CPU", "Memory", "Clients", "Storage"].map((h) => el("th", {}, h)))), table));
  const refresh = async () => {
    const dbs = await api("GET", "/v1/databases");
    if (page !== shownPage) return;
    table.replaceChildren(...dbs.map((d) => {
      const m = d.measured || {};
      return el("tr", { "data-db": d.name },
        el("td", {}, el("a", { href: "#/db/" + encodeURIComponent(d.name) }, d.name)),
        el("td", {}, stateBadge(d.state)),
        el("td", {}, d.scu),
        el("td", { class: "muted" }, `${d.min_scu}–${d.max_scu}`),
        el("td", {}, d.node),
        el("td", {}, m.cpu_millis == null ? "–" : `${Math.round(m.cpu_millis)}m / ${Math.round(d.cpu_limit * 1000)}m`),
        el("td", {}, `${bytes(d.memory_usage)} / ${bytes(d.memory_limit)}`),
        el("td", {}, d.activity ? d.activity.connections : 0),
        el("td", {}, `${bytes(d.storage_used_bytes)} / ${bytes(d.storage_limit_bytes)}`));
    }));
    if (!dbs.length) table.append(el("tr", {}, el("td", { colspan: 9, class: "muted" }, "No databases yet.")));
  };
  every(2000, refresh);
}

// ---- one database ----

// The series of each chart, from the samples (`/v1/databases/NAME/history`).
const CHARTS = [
  { title: "Size (SCU)", id: "scu", series: [["SCU", (s) => s.scu]] },
  { title: "CPU (millicores)", id: "cpu", series: [["used", (s) => s.cpu_millicores], ["quota", (s) => s.cpu_quota_millicores]] },
  { title: "Memory (MiB)", id: "memory", series: [["used", (s) => s.memory_bytes == null ? null : s.memory_bytes / 1048576], ["limit", (s) => s.memory_limit_bytes / 1048576]] },
  { title: "Buffer pool hit ratio (%)", id: "hits", series: [["hits", (s) => s.buffer_pool_hit_ratio == null ? null : s.buffer_pool_hit_ratio * 100]] },
  { title: "Statements per second", id: "qps", series: [["statements/s", null]] },
  { title: "Client connections", id: "connections", series: [["connections", (s) => s.connections]] },
];
const COLORS = ["#2f6fde", "#c0392b", "#27ae60"];

// Draws each event of `shown.events` as a vertical line with its kind, on the chart's time axis.
function eventsPlugin(shown) {
  return {
    hooks: {
      draw: [(u) => {
        const ctx = u.ctx;
        const { top, height } = u.bbox;
        ctx.save();
        ctx.font = `${10 * devicePixelRatio}px system-ui`;
        // Labels staggered in three rows, so events close in time stay readable.
        let row = 0;
        for (const ev of shown.events) {
          const x = Math.round(u.valToPos(ev.time_ms / 1000, "x", true));
          if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
          ctx.strokeStyle = "#e67e22";
          ctx.lineWidth = 2 * devicePixelRatio;
          ctx.fillStyle = "#96501a";
          ctx.beginPath();
          ctx.moveTo(x, top);
          ctx.lineTo(x, top + height);
          ctx.stroke();
          ctx.fillText(ev.kind, x + 3, top + (12 + 12 * (row++ % 3)) * devicePixelRatio);
        }
        ctx.restore();
      }],
    },
  };
}

// The x range (seconds) that holds the samples (`min`–`max`) and every event, a little padded.
function timeRange(min, max, events) {
  for (const ev of events) {
    min = Math.min(min, ev.time_ms / 1000);
    max = Math.max(max, ev.time_ms / 1000);
  }
  if (!(max > min)) { min -= 30; max += 30; }
  const pad = (max - min) * 0.02;
  return [min - pad, max + pad];
}

function seriesData(samples, chart) {
  const t = samples.map((s) => s.t_ms / 1000);
  const cols = chart.series.map(([, f]) => {
    if (f) return samples.map(f);
    // Statements per second: the difference of the running total between samples.
    return samples.map((s, i) => {
      if (i === 0) return null;
      const prev = samples[i - 1];
      const dt = (s.t_ms - prev.t_ms) / 1000;
      const d = s.statements_total - prev.statements_total;
      return dt > 0 && d >= 0 ? d / dt : null;
    });
  });
  return [t, ...cols];
}

async function dbPage(name) {
  const page = newPage();
  const title = el("h1", {}, name, " ", el("span", { id: "state" }));
  const facts = el("p", { class: "muted", id: "facts" });
  const scaleInput = el("input", { type: "number", min: 1, max: 16, id: "scale-to", placeholder: "SCU" });
  const action = (label, f, cls) => el("button", { type: "button", class: cls, "data-action": label.toLowerCase(), onclick: guarded(f) }, label);
  const actions = el("div", { class: "actions" },
    scaleInput, action("Scale", async () => {
      await api("POST", `/v1/databases/${encodeURIComponent(name)}/scale`, { scu: Number(scaleInput.value) });
      await refresh();
    }),
    action("Suspend", async () => { await api("POST", `/v1/databases/${encodeURIComponent(name)}/suspend`, {}); await refresh(); }),
    action("Park", async () => { await api("POST", `/v1/databases/${encodeURIComponent(name)}/park`, {}); await refresh(); }),
    action("Resume", async () => { await api("POST", `/v1/databases/${encodeURIComponent(name)}/resume`); await refresh(); }),
    action("Delete", async () => {
      if (!confirm(`Delete database ${name} and all its data? This cannot be undone.`)) return;
      await api("DELETE", `/v1/databases/${encodeURIComponent(name)}`);
      location.hash = "#/";
    }, "danger"));
  const chartBox = el("div", { class: "charts", id: "charts" });
  const eventRows = el("tbody", { id: "events" });
  view.replaceChildren(el("p", {}, el("a", { href: "#/" }, "← Databases")), title, facts, actions,
    el("h2", {}, "Last hour"), chartBox,
    el("h2", {}, "Events"), el("table", { class: "events" }, eventRows));
  const charts = [];
  const shown = { events: [] };
  const refresh = async () => {
    const path = `/v1/databases/${encodeURIComponent(name)}`;
    const [d, h, events] = await Promise.all([
      api("GET", path),
      api("GET", path + "/history"),
      api("GET", `/v1/events?db=${encodeURIComponent(name)}&limit=10000`),
    ]);
    if (page !== shownPage) return;
    document.getElementById("state").replaceChildren(stateBadge(d.state));
    facts.textContent = `${d.scu} SCU (${d.min_scu}–${d.max_scu}, ${d.tier}) on ${d.node} · ` +
      `${d.cpu_limit} vCPU, ${bytes(d.memory_limit)} · buffer pool ${bytes(d.buffer_pool_size)} · ` +
      `connect: ${d.host}:${d.port} as ${d.name}.<user>`;
    const since = Date.now() - 3600 * 1000;
    const recent = events.filter((e) => e.time_ms >= since);
    eventRows.replaceChildren(...recent.slice().reverse().map((e) =>
      el("tr", { "data-kind": e.kind }, el("td", {}, e.time), el("td", {}, e.kind), el("td", {}, e.message))));
    const samples = h.samples;
    shown.events = recent;
    if (charts.length === 0) {
      for (const c of CHARTS) {
        const box = el("div", { class: "chart", "data-chart": c.id }, el("h3", {}, c.title));
        chartBox.append(box);
        const opts = {
          width: 500, height: 180,
          // The time axis covers the events too, so one from before the first sample shows.
          scales: { x: { range: (u, min, max) => timeRange(min, max, shown.events) } },
          series: [{}, ...c.series.map(([label], i) => ({ label, stroke: COLORS[i], width: 1.5, spanGaps: false }))],
          axes: [{}, { size: 50 }],
          plugins: [eventsPlugin(shown)],
        };
        const plot = new uPlot(opts, seriesData(samples, c), box);
        plots.push(plot);
        charts.push({ plot, spec: c });
      }
    } else {
      for (const ch of charts) ch.plot.setData(seriesData(samples, ch.spec));
    }
    chartBox.dataset.samples = String(samples.length);
    chartBox.dataset.events = String(recent.length);
  };
  every(5000, refresh);
}

// ---- routing ----

function route() {
  newPage();
  const token = sessionStorage.getItem(TOKEN_KEY);
  document.getElementById("login").hidden = !!token;
  document.getElementById("forget").hidden = !token;
  if (!token) {
    view.replaceChildren();
    return;
  }
  const m = location.hash.match(/^#\/db\/([a-z][a-z0-9-]*)$/);
  if (m) dbPage(m[1]);
  else listPage();
}

document.getElementById("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
  document.getElementById("token").value = "";
  route();
});
document.getElementById("forget").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  route();
});
window.addEventListener("hashchange", route);
route();
