// FastGateway dashboard: polls the admin API of the listener that served this page
// (docs/admin.md) and renders it; every change goes through the same API.
"use strict";

const POLL_MS = 1000;
const WINDOW_MS = 10000; // rates and percentiles cover the last 10 s
let token = sessionStorage.getItem("fgToken") || "";
const snaps = []; // [{t, stats}] over the last WINDOW_MS

(function tokenFromFragment() {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) {
    token = decodeURIComponent(m[1]);
    sessionStorage.setItem("fgToken", token);
    window.history.replaceState(null, "", location.pathname); // keep it out of the address bar
  }
})();

async function api(method, path, body) {
  const headers = {};
  if (token) headers["Authorization"] = "Bearer " + token;
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  if (r.status === 401) {
    document.getElementById("login").hidden = false;
    throw new Error("a token is needed");
  }
  const doc = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(doc.error || r.status + " " + r.statusText);
  return doc;
}

const el = (id) => document.getElementById(id);
const fmt = (n, d = 0) => (n === undefined || n === null || isNaN(n) ? "–" : n.toFixed(d));
const pct = (n) => (isNaN(n) ? "–" : (100 * n).toFixed(1) + "%");

// The q-quantile of a cumulative histogram, interpolated inside its bucket, in ms.
function quantile(bounds, cum, q) {
  const count = cum[cum.length - 1];
  if (!count) return NaN;
  const target = q * count;
  for (let i = 0; i < cum.length; i++) {
    if (cum[i] >= target) {
      const lo = i === 0 ? 0 : bounds[i - 1];
      const hi = i < bounds.length ? bounds[i] : bounds[bounds.length - 1];
      const below = i === 0 ? 0 : cum[i - 1];
      const inb = cum[i] - below;
      const f = inb > 0 ? (target - below) / inb : 1;
      return 1000 * (lo + (hi - lo) * f);
    }
  }
  return NaN;
}

const sumCodes = (r) => Object.values(r || {}).reduce((a, b) => a + b, 0);
const byId = (list) => Object.fromEntries((list || []).map((o) => [o.id, o]));
const diffCum = (a, b) => a.map((v, i) => v - ((b && b[i]) || 0));

function row(tbody, cells, attrs) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    if (c instanceof Node) td.appendChild(c);
    else td.textContent = c;
    tr.appendChild(td);
  }
  if (attrs) for (const k in attrs) tr.setAttribute(k, attrs[k]);
  tbody.appendChild(tr);
  return tr;
}

function button(label, onclick, data) {
  const b = document.createElement("button");
  b.textContent = label;
  b.addEventListener("click", onclick);
  if (data) for (const k in data) b.dataset[k] = data[k];
  return b;
}

function clear(id) {
  const tb = el(id).querySelector("tbody");
  tb.textContent = "";
  return tb;
}

function renderTotals(cur, old, secs) {
  const servers = cur.servers || [];
  const agg = (s) => {
    const o = { total: 0, c4: 0, c5: 0, conns: 0 };
    for (const v of s) {
      o.total += sumCodes(v.requests);
      o.c4 += v.requests["4xx"];
      o.c5 += v.requests["5xx"];
    }
    return o;
  };
  const a = agg(servers), b = old ? agg(old.servers || []) : a;
  const d = a.total - b.total;
  el("total").textContent = a.total;
  el("rps").textContent = old ? fmt(d / secs, 1) : "–";
  el("err4").textContent = d > 0 ? pct((a.c4 - b.c4) / d) : pct(a.total ? a.c4 / a.total : NaN);
  el("err5").textContent = d > 0 ? pct((a.c5 - b.c5) / d) : pct(a.total ? a.c5 / a.total : NaN);
  el("conns").textContent = (cur.connections || {}).clients;
}

function renderRoutes(cur, old, secs) {
  const tb = clear("routes");
  const prev = byId(old && old.routes);
  for (const r of cur.routes || []) {
    const p = prev[r.id];
    const cum = p ? diffCum(r.latency.cumulative, p.latency.cumulative) : r.latency.cumulative;
    const d = sumCodes(r.requests) - (p ? sumCodes(p.requests) : 0);
    const b = cur.bucketBoundsSeconds;
    row(tb, [r.id, p ? fmt(d / secs, 1) : "–", r.requests["2xx"], r.requests["4xx"],
      r.requests["5xx"], fmt(quantile(b, cum, 0.5), 1) + " ms",
      fmt(quantile(b, cum, 0.95), 1) + " ms", fmt(quantile(b, cum, 0.99), 1) + " ms"],
      { "data-route": r.id });
  }
}

function setState(cluster, dest, state) {
  api("PUT", "/api/clusters/" + encodeURIComponent(cluster) + "/destinations/" +
      encodeURIComponent(dest) + "/state", { state }).catch((e) => alert(e.message));
}

function upstreamCells(o, p, secs) {
  return [p ? fmt((o.requests - p.requests) / secs, 1) : "–", o.failures, o.inFlight];
}

function renderClusters(cur, old, health, secs) {
  const tb = clear("clusters");
  const b = cur.bucketBoundsSeconds;
  const prev = byId(old && old.clusters);
  const hs = {};
  for (const c of (health && health.clusters) || [])
    for (const d of c.destinations || []) hs[c.id + "/" + (d.id || d.destination)] = d;
  for (const c of cur.clusters || []) {
    const p = prev[c.id];
    const pq = (o, q, po) => fmt(quantile(b, po ? diffCum(o.responseTime.cumulative,
      po.responseTime.cumulative) : o.responseTime.cumulative, q), 1) + " ms";
    row(tb, [c.id, ...upstreamCells(c, p, secs), c.destinationsUp + " up", "",
      pq(c, 0.5, p), pq(c, 0.95, p), pq(c, 0.99, p), ""], { "data-cluster": c.id });
    const pd = byId(p && p.destinations);
    for (const d of c.destinations || []) {
      const h = hs[c.id + "/" + d.id] || {};
      const sel = document.createElement("select");
      for (const s of ["ready", "drain", "maint"]) sel.add(new Option(s, s, false, s === d.admin));
      sel.addEventListener("change", () => setState(c.id, d.id, sel.value));
      const tr = row(tb, ["\u2003" + d.id, ...upstreamCells(d, pd[d.id], secs),
        d.up ? "up" : "down", sel, pq(d, 0.5, pd[d.id]), pq(d, 0.95, pd[d.id]),
        pq(d, 0.99, pd[d.id]), h.weight !== undefined ? "weight " + h.weight : ""],
        { "data-destination": c.id + "/" + d.id });
      tr.children[4].className = d.up ? "up" : "down";
    }
  }
}

function renderRateLimits(rl) {
  const tb = clear("ratelimits");
  for (const r of rl.rules || [])
    row(tb, [r.id, r.scope, r.allowed, r.limited, r.activeKeys], { "data-ratelimit": r.id });
}

function renderAcls(acl) {
  const tb = clear("acls");
  const sel = el("blocklist");
  const keep = sel.value;
  sel.textContent = "";
  for (const l of acl.lists || []) {
    row(tb, [l.id, l.type, l.entries, (l.dynamic || []).length, l.checks, l.denied],
      { "data-acl": l.id });
    if (l.type === "blacklist") sel.add(new Option(l.id, l.id));
  }
  if (keep) sel.value = keep;
  else if ([...sel.options].some((o) => o.value === "autoBlock")) sel.value = "autoBlock";
}

async function block(ip) {
  const list = el("blocklist").value;
  if (!list) {
    el("blockmsg").textContent = "no blacklist to block into";
    return;
  }
  try {
    await api("POST", "/api/accessControl/" + encodeURIComponent(list) + "/dynamic",
      { entry: ip });
    el("blockmsg").textContent = "blocked " + ip + " in " + list;
  } catch (e) {
    el("blockmsg").textContent = "refused: " + e.message;
  }
}

function renderAbnormal(ab) {
  const tb = clear("abnormal");
  for (const a of ab.addresses || [])
    row(tb, [a.ip, a.errors, a.total, a.blocked ? "yes" : "no",
      button("Block", () => block(a.ip), { ip: a.ip })], { "data-ip": a.ip });
}

function renderReloads(r) {
  const tb = clear("reloads");
  for (const e of (r.reloads || []).slice().reverse())
    row(tb, [e.time, e.generation, e.result, e.error || ""]);
}

async function poll() {
  try {
    const [stats, status, health, rl, acl, ab, reloads] = await Promise.all([
      api("GET", "/api/stats"), api("GET", "/api/status"), api("GET", "/api/health"),
      api("GET", "/api/ratelimitStats"), api("GET", "/api/aclStats"),
      api("GET", "/api/abnormal"), api("GET", "/api/reloads")]);
    const now = Date.now();
    snaps.push({ t: now, stats });
    while (snaps.length > 1 && now - snaps[0].t > WINDOW_MS) snaps.shift();
    const old = snaps.length > 1 ? snaps[0] : null;
    const secs = old ? (now - old.t) / 1000 : 1;
    renderTotals(stats, old && old.stats, secs);
    renderRoutes(stats, old && old.stats, secs);
    renderClusters(stats, old && old.stats, health, secs);
    renderRateLimits(rl);
    renderAcls(acl);
    renderAbnormal(ab);
    renderReloads(reloads);
    el("gen").textContent = status.generation;
    el("status").textContent = "pid " + status.pid + ", " + status.workers + " workers";
    el("status").className = "";
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
  } catch (e) {
    el("status").textContent = e.message;
    el("status").className = "bad";
  }
  setTimeout(poll, POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  el("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = el("token").value;
    sessionStorage.setItem("fgToken", token);
    el("login").hidden = true;
  });
  el("blockbtn").addEventListener("click", () => block(el("blockip").value.trim()));
  el("reloadbtn").addEventListener("click", async () => {
    el("reloadmsg").textContent = "reloading…";
    try {
      const r = await api("POST", "/api/reload");
      el("reloadmsg").textContent = "generation " + r.reload.generation + " serving";
    } catch (e) {
      el("reloadmsg").textContent = e.message;
    }
  });
  poll();
});
