/* The autofix dashboard: reads the JSON API with a bearer token, draws, refreshes.
 *
 * Untrusted text (targets, labels, reasons) only ever goes through textContent or
 * setAttribute; nothing here parses HTML.
 */
"use strict";

(() => {
  const API = "api/v1";
  const TOKEN_KEY = "autofix.token";
  const REFRESH_MS = 30000;
  const TOP_SERIES = 6;
  const RECENT_FIXES = 50;
  const KPI_ORDER = [
    ["auto_fix_success_rate", "auto-fix success rate"],
    ["mttr_reduction", "MTTR reduction"],
    ["preventive_execution_rate", "preventive execution rate"],
    ["false_fix_rate", "false-fix rate"],
    ["recovery_p95_seconds", "recovery time p95"],
  ];

  const $ = (id) => document.getElementById(id);
  let refreshing = null;
  let timer = null;
  let refreshFailed = false;

  // -- small helpers ---------------------------------------------------------------

  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "class") node.className = value;
      else node.setAttribute(key, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** Store timestamps are naive UTC: read a string without a zone as UTC. */
  function parseTime(value) {
    if (value === null || value === undefined || value === "") return null;
    if (typeof value === "number") return value < 1e11 ? value * 1000 : value;
    const text = String(value);
    const zoned = /(Z|[+-]\d\d:?\d\d)$/.test(text) ? text : `${text}Z`;
    const ms = Date.parse(zoned);
    return Number.isNaN(ms) ? null : ms;
  }

  /** Local time as 2026-03-02 14:05. */
  function showTime(value) {
    const ms = parseTime(value);
    if (ms === null) return "—";
    const d = new Date(ms), two = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}`;
  }

  function inWords(ms) {
    const abs = Math.abs(ms), sign = ms < 0 ? "-" : "";
    if (abs < 3600e3) return `${sign}${Math.round(abs / 60e3)} min`;
    if (abs < 48 * 3600e3) return `${sign}${(abs / 3600e3).toFixed(1)} h`;
    return `${sign}${(abs / 86400e3).toFixed(1)} d`;
  }

  function stateClass(state) {
    return /^[a-z_]+$/.test(state || "") ? state : "unknown";
  }

  function labelText(labels) {
    if (!labels) return "";
    let parsed = labels;
    if (typeof labels === "string") {
      try { parsed = JSON.parse(labels); } catch { return labels; }
    }
    if (typeof parsed !== "object") return String(parsed);
    return Object.entries(parsed).map(([k, v]) => `${k}=${v}`).join(", ");
  }

  function notice(text, isError) {
    const box = $("notice");
    box.textContent = text || "";
    box.classList.toggle("error", Boolean(isError));
    box.hidden = !text;
  }

  // -- the API -------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, detail) {
      super(`HTTP ${status}: ${detail}`);
      this.status = status;
    }
  }

  async function api(path, options) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const response = await fetch(`${API}/${path}`, {
      ...options,
      headers: { Accept: "application/json", Authorization: `Bearer ${token}` },
    });
    if (!response.ok) {
      let detail = response.statusText;
      try {
        const body = await response.json();
        detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail ?? body);
      } catch { /* keep the status text */ }
      throw new ApiError(response.status, detail);
    }
    return response.status === 204 ? null : response.json();
  }

  /** The rows of a list response (a Page: total, limit, offset, items). */
  function items(page) {
    return page && Array.isArray(page.items) ? page.items : [];
  }

  // -- KPIs ----------------------------------------------------------------------

  function kpiValue(name, value) {
    if (value === null || value === undefined || Number.isNaN(value)) return "—";
    if (name.endsWith("_seconds")) return value >= 120 ? `${(value / 60).toFixed(1)} min` : `${value.toFixed(0)} s`;
    const percent = value * 100;
    return `${percent >= 10 || percent === 0 ? percent.toFixed(0) : percent.toPrecision(2)} %`;
  }

  function bound(name, target, which) {
    if (!target) return "";
    const sign = target.better === "higher" ? "≥" : target.strict ? "<" : "≤";
    return `${sign} ${kpiValue(name, target[which])}`;
  }

  function renderKpis(kpis) {
    const tiles = KPI_ORDER.map(([name, label]) => {
      const status = stateClass((kpis.status || {})[name] || "no_data");
      const target = (kpis.targets || {})[name];
      return h("div", { class: `tile ${status}`, "data-kpi": name, title: status.replace(/_/g, " ") },
        h("div", { class: "label" }, label),
        h("div", { class: "value" }, kpiValue(name, kpis[name])),
        h("div", { class: "target" }, `target ${bound(name, target, "seed")} · goal ${bound(name, target, "goal")}`));
    });
    tiles.push(h("div", { class: "tile", "data-kpi": "pending_approvals" },
      h("div", { class: "label" }, "pending approvals"),
      h("div", { class: "value" }, String(kpis.pending_approvals ?? 0)),
      h("div", { class: "target" }, `${kpis.applied_fixes ?? 0} fixes applied`)));
    $("kpis").replaceChildren(...tiles);
    const days = kpis.window_seconds ? (kpis.window_seconds / 86400).toFixed(0) : null;
    $("kpi-window").textContent = days ? `(last ${days} days)` : "";
  }

  // -- riskiest series -----------------------------------------------------------

  function points(rows, key) {
    return (rows || [])
      .map((r) => [parseTime(r.ts), r[key]])
      .filter(([t, v]) => t !== null && Number.isFinite(v));
  }

  /** The series forecast response → the chart's input. */
  function chartData(body, summary) {
    const forecastRows = body.forecast || [];
    let capacity = points(body.capacity_history, "capacity");
    if (!capacity.length && Number.isFinite(body.capacity)) {
      const ts = [...(body.history || []), ...forecastRows].map((r) => parseTime(r.ts));
      capacity = [[Math.min(...ts), body.capacity]];
    }
    return {
      history: points(body.history, "value"),
      forecast: points(forecastRows, "value"),
      band: forecastRows
        .map((r) => [parseTime(r.ts), r.lo, r.hi])
        .filter(([t, lo, hi]) => t !== null && Number.isFinite(lo) && Number.isFinite(hi)),
      capacity,
      eta: parseTime(body.eta ?? summary.eta),
      now: Date.now(),
      unit: body.unit || "",
      title: `${summary.host} ${summary.metric}`,
    };
  }

  /** A chart and its caption, or why there is none; fetched before the cards swap in. */
  async function seriesChart(summary) {
    try {
      const body = await api(`series/${encodeURIComponent(summary.series_id)}/forecast`);
      const caption = body.direction === "down"
        ? "the value counts what is left: it runs out at 0"
        : "the value counts what is used: it runs out at the capacity";
      return [AutofixChart.forecastChart(chartData(body, summary)), caption];
    } catch (err) {
      if (err.status === 401) throw err;
      return [h("p", { class: "muted" }, `no chart: ${err.message}`), ""];
    }
  }

  function seriesCard(summary, [chart, caption]) {
    const eta = parseTime(summary.eta);
    const p = Number.isFinite(summary.p_within) ? `${(summary.p_within * 100).toFixed(0)} %` : "—";
    const range = summary.eta_lo || summary.eta_hi
      ? ` (80 %: ${showTime(summary.eta_lo)} – ${showTime(summary.eta_hi)})` : "";
    return h("article", { class: "card", "data-series": summary.series_id },
      h("h3", {}, `${summary.host} · ${summary.metric}`),
      h("div", { class: "meta" }, labelText(summary.labels)),
      h("div", {},
        h("span", { class: "risk" }, `P(within ${summary.within ?? "24h"}) ${p}`), " · ETA ",
        eta === null ? "none" : `${showTime(summary.eta)} (in ${inWords(eta - Date.now())})`,
        h("span", { class: "meta" }, range)),
      chart,
      h("div", { class: "meta" }, caption),
      h("div", { class: "meta" }, `model ${summary.model ?? "?"} v${summary.model_version ?? "?"},`
        + ` made ${showTime(summary.made_at)}`));
  }

  function renderSeries(rows, charts) {
    $("series").replaceChildren(...rows.map((row, i) => seriesCard(row, charts[i])));
    $("series-empty").hidden = rows.length > 0;
  }

  // -- approvals -----------------------------------------------------------------

  async function decide(fix, verdict, row) {
    for (const button of row.querySelectorAll("button")) button.disabled = true;
    try {
      const result = await api(`fixes/${encodeURIComponent(fix.id)}/${verdict}`, { method: "POST" });
      const state = result && result.state ? ` → ${result.state}` : "";
      notice(`fix #${fix.id} ${verdict === "approve" ? "approved" : "rejected"}${state}`, false);
    } catch (err) {
      const why = err.status === 403 ? "your token may not approve or reject fixes (operator role needed)" : "";
      notice(`could not ${verdict} fix #${fix.id}: ${err.message}${why ? ` — ${why}` : ""}`, true);
    }
    if (refreshing) await refreshing; // it may have read the fixes before this verdict
    await refresh();
  }

  function planText(fix) {
    const steps = (fix.plan || []).map((s) => s.detail || s.op).filter(Boolean);
    return steps.length ? steps.join("; ") : (fix.reason || "");
  }

  function renderApprovals(pending) {
    const rows = items(pending).map((fix) => {
      const approve = h("button", { type: "button", class: "approve" }, "Approve");
      const reject = h("button", { type: "button", class: "reject" }, "Reject");
      const row = h("tr", { "data-fix": fix.id },
        h("td", {}, `#${fix.id}`), h("td", {}, fix.action), h("td", {}, fix.target),
        h("td", {}, showTime(fix.requested_at)), h("td", {}, planText(fix)),
        h("td", { class: "buttons" }, approve, reject));
      approve.addEventListener("click", () => decide(fix, "approve", row));
      reject.addEventListener("click", () => decide(fix, "reject", row));
      return row;
    });
    $("approvals").querySelector("tbody").replaceChildren(...rows);
    $("approvals").hidden = rows.length === 0;
    $("approvals-empty").hidden = rows.length > 0;
  }

  // -- the fix timeline ----------------------------------------------------------

  function renderFixes(fixes) {
    const rows = items(fixes).slice(0, RECENT_FIXES);
    const dots = rows.map((fix) => ({
      time: parseTime(fix.updated_at || fix.requested_at),
      state: stateClass(fix.state),
      label: `#${fix.id} ${fix.action} on ${fix.target}: ${fix.state}`,
    })).filter((d) => d.time !== null);
    $("timeline").replaceChildren(AutofixChart.timeline(dots, Date.now()));
    $("fixes").replaceChildren(...rows.map((fix) => h("li", { "data-fix": fix.id },
      h("span", { class: "when" }, showTime(fix.updated_at || fix.requested_at)),
      h("span", { class: `state ${stateClass(fix.state)}` }, fix.state),
      h("span", {}, `#${fix.id} ${fix.action} on ${fix.target}`),
      h("span", { class: "muted" }, fix.error || fix.reason || ""))));
  }

  // -- the loop ------------------------------------------------------------------

  async function load() {
    const [kpis, forecasts, pending, fixes] = await Promise.all([
      api("kpis"),
      api(`forecasts?within=24h&limit=${TOP_SERIES}`),
      api("fixes?state=pending_approval"),
      api(`fixes?limit=${RECENT_FIXES}`),
    ]);
    const risky = items(forecasts).slice(0, TOP_SERIES);
    const charts = await Promise.all(risky.map(seriesChart));
    renderKpis(kpis);
    renderApprovals(pending);
    renderSeries(risky, charts);
    renderFixes(fixes);
    $("updated").textContent = `updated ${new Date().toTimeString().slice(0, 8)}`;
    document.body.dataset.loaded = String(Date.now());
    if (refreshFailed) notice("");
    refreshFailed = false;
  }

  async function refresh() {
    if (!sessionStorage.getItem(TOKEN_KEY)) return;
    if (!refreshing) {
      refreshing = load()
        .catch((err) => {
          if (err.status === 401) {
            signOut();
            notice("The token was not accepted (401): enter another.", true);
          } else {
            refreshFailed = true;
            notice(`Refresh failed: ${err.message}`, true);
          }
        })
        .finally(() => { refreshing = null; });
    }
    return refreshing;
  }

  function signIn(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    $("login").hidden = true;
    $("board").hidden = false;
    $("signout").hidden = false;
    notice("");
    refresh();
    clearInterval(timer);
    timer = setInterval(refresh, REFRESH_MS);
  }

  function signOut() {
    sessionStorage.removeItem(TOKEN_KEY);
    clearInterval(timer);
    $("board").hidden = true;
    $("signout").hidden = true;
    $("login").hidden = false;
    $("token").value = "";
    $("token").focus();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("token").value.trim();
      if (token) signIn(token);
    });
    $("signout").addEventListener("click", () => { signOut(); notice(""); });
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) signIn(saved); else signOut();
  });
})();
