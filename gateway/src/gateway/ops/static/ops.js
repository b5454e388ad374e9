// The ops page: fill the service cards from the event stream, post the operator's actions.
// No framework, no build step. Every value goes in as text (textContent), never as HTML.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function fmt(value, digits) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function ago(at) {
  const s = Math.max(0, Date.now() / 1000 - at);
  return s < 60 ? `${s.toFixed(0)} s ago` : `${(s / 60).toFixed(0)} min ago`;
}

// A sparkline: the series as a polyline over the last five minutes (gaps stay gaps).
function spark(svg, values) {
  const w = 160, h = 36;
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.replaceChildren();
  const known = values.filter((v) => v !== null);
  const max = Math.max(1e-9, ...known);
  const step = values.length > 1 ? w / (values.length - 1) : w;
  let path = "";
  values.forEach((v, i) => {
    if (v === null) return;
    const x = (i * step).toFixed(1), y = (h - 2 - (v / max) * (h - 4)).toFixed(1);
    path += `${path && values[i - 1] !== null ? "L" : "M"}${x},${y}`;
  });
  const line = document.createElementNS("http://www.w3.org/2000/svg", "path");
  line.setAttribute("d", path);
  svg.appendChild(line);
  svg.setAttribute("aria-label", `max ${fmt(max, 2)}`);
}

function row(table, cells, cls) {
  const tr = el("tr", null, cls);
  cells.forEach((c) => tr.appendChild(el("td", c)));
  table.appendChild(tr);
}

function renderService(s) {
  const card = document.getElementById(`svc-${s.name}`);
  if (!card) return;
  const health = card.querySelector('[data-field="health"]');
  const state = !s.healthy ? "down" : s.ready ? "healthy" : "not ready";
  health.textContent = state + (s.ready_detail ? `: ${s.ready_detail}` : "");
  health.dataset.state = state;
  card.dataset.health = state;
  card.querySelector('[data-field="version"]').textContent = s.version ? `v${s.version}` : "";

  const canary = card.querySelector('[data-field="canary"]');
  const control = card.querySelector(".canary-control");
  if (s.canary) {
    const c = s.canary;
    canary.textContent = `canary ${c.version || "?"} at ${c.weight} % (${c.upstream}, ` +
      `${c.healthy ? "healthy" : "DOWN"}), step ${c.step || "–"}: judging`;
  } else {
    canary.textContent = "";
  }
  if (control) control.hidden = !s.canary;

  for (const key of ["rps", "error_pct", "p50_ms", "p99_ms"]) {
    card.querySelector(`[data-now="${key}"]`).textContent = fmt(s.now[key], key === "rps" ? 1 : 2);
    spark(card.querySelector(`[data-spark="${key}"]`), s.series[key]);
  }

  const breakers = card.querySelector('[data-field="breakers"]');
  breakers.replaceChildren();
  if (!s.breakers.length) row(breakers, ["no downstreams"]);
  for (const b of s.breakers) {
    const last = b.transitions.slice(-3).map((t) => `${t.from}→${t.to} ${ago(t.at)}`).join(", ");
    const tr = el("tr", null, `breaker state-${b.state}`);
    tr.dataset.dependency = b.dependency;
    tr.dataset.state = b.state;
    [b.dependency, b.state, last || "no change seen"].forEach((c) => tr.appendChild(el("td", c)));
    breakers.appendChild(tr);
  }

  const shed = card.querySelector('[data-field="shed"]');
  shed.replaceChildren();
  const shedding = s.shed.filter((x) => x.total > 0);
  if (!shedding.length) row(shed, ["nothing shed"]);
  for (const x of shedding) row(shed, [`${x.tier}/${x.reason}`, `${x.total}`, `${x.per_s}/s`]);

  const modes = card.querySelector('[data-field="modes"]');
  modes.replaceChildren();
  modes.appendChild(el("li", s.degraded ? "DEGRADED (cached reads)" : "not degraded"));
  const ro = el("li", s.read_only ? "READ-ONLY (writes 503)" : "read-write");
  ro.dataset.field = "read-only";
  ro.dataset.state = s.read_only ? "on" : "off";
  modes.appendChild(ro);
  modes.appendChild(el("li", `in flight ${s.now.in_flight}`));
  if (s.pool) {
    modes.appendChild(el("li", `pool ${s.pool.used}/${s.pool.max} used, wait ${fmt(s.pool.wait_ms, 1)} ms` +
      (s.pool.timeouts ? `, ${s.pool.timeouts} timeouts` : "")));
  }
  const limited = Object.entries(s.rate_limited).filter(([, n]) => n > 0);
  if (Object.keys(s.rate_limited).length) {
    modes.appendChild(el("li", "rate-limit refusals: " +
      (limited.length ? limited.map(([r, n]) => `${r} ${n}`).join(", ") : "none") +
      (s.rate_limit_fallback ? " (counting in memory: Redis unreachable)" : "")));
  }
  const faultsNow = card.querySelector(".faults-now");
  if (faultsNow && s.faults) {
    faultsNow.textContent = ` now: error_rate ${s.faults.error_rate}, latency ${s.faults.latency_ms} ms` +
      (s.faults.hang ? ", HANG" : "");
  }
}

function renderTraces(traces, lastRun) {
  const list = document.getElementById("traces");
  list.replaceChildren();
  for (const t of traces) {
    const li = el("li");
    const a = el("a", `${t.name}`);
    a.href = `/ops/traces/${t.trace_id}`;
    li.appendChild(a);
    li.appendChild(el("span", ` ${t.service} ${t.status ?? ""} ${fmt(t.duration_ms, 1)} ms, ${ago(t.at)}` +
      (t.error ? " ERROR" : "")));
    list.appendChild(li);
  }
  if (!traces.length) list.appendChild(el("li", "no traces yet (the stack writes them under .run/traces)"));
  document.getElementById("last-canary-run").textContent = lastRun
    ? `last canary run: ${lastRun.service} ${lastRun.outcome} (${lastRun.run}): ${lastRun.reason || ""}`
    : "";
}

function say(text, bad) {
  const message = document.getElementById("message");
  message.textContent = text;
  message.dataset.bad = bad ? "1" : "";
}

async function act(path, body) {
  const response = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify(body || {}),
  });
  let detail = "";
  try { detail = (await response.json()).detail || ""; } catch (e) { detail = ""; }
  say(response.ok ? `${path}: done` : `${path}: ${response.status} ${detail}`, !response.ok);
  return response.ok;
}

document.addEventListener("submit", (event) => {
  const form = event.target.closest("form.faults");
  if (!form) return;
  event.preventDefault();
  act(`/ops/actions/faults/${form.dataset.service}`, {
    error_rate: Number(form.elements.error_rate.value),
    latency_ms: Math.round(Number(form.elements.latency_ms.value)),
    hang: form.elements.hang.checked,
  });
});

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button || button.type === "submit") return;
  const service = button.closest("[data-service]").dataset.service;
  const action = button.dataset.action;
  if (action === "clear-faults") {
    const form = button.closest("form");
    form.reset();
    act(`/ops/actions/faults/${service}`, { error_rate: 0, latency_ms: 0, hang: false });
  } else if (action === "read-only-on" || action === "read-only-off") {
    act(`/ops/actions/read-only/${service}`, { read_only: action === "read-only-on" });
  } else if (action === "rollback") {
    act(`/ops/actions/canary/${service}/rollback`);
  }
});

const status = document.getElementById("stream-status");
const stream = new EventSource("/ops/events");
stream.onopen = () => { status.textContent = "live"; status.dataset.state = "live"; };
stream.onerror = () => { status.textContent = "reconnecting…"; status.dataset.state = "down"; };
stream.onmessage = (event) => {
  const data = JSON.parse(event.data);
  data.services.forEach(renderService);
  renderTraces(data.traces, data.last_canary_run);
  document.body.dataset.updatedAt = String(data.at);
};
