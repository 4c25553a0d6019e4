/* The autofix dashboard: reads the JSON API with a bearer token, draws, refreshes.
 *
 * What a token may do comes from GET /api/v1/whoami: a viewer gets no buttons that act
 * (approve, reject, rollback, pause, resume, silence); an operator gets them, and every
 * one of them asks for a confirmation first. Untrusted text (targets, labels, reasons)
 * only ever goes through textContent or setAttribute; nothing here parses HTML. Times
 * are shown in UTC, as the CLI and the store keep them.
 */
"use strict";

(() => {
  const API = "api/v1";
  const TOKEN_KEY = "autofix.token";
  const REFRESH_MS = 30000;
  const TOP_SERIES = 6;
  const RECENT = 50;
  const RANGES = [["6h", "6 h"], ["24h", "24 h"], ["3d", "3 d"], ["7d", "7 d"], ["30d", "30 d"]];
  const KPI_ORDER = [
    ["auto_fix_success_rate", "auto-fix success rate"],
    ["mttr_reduction", "MTTR reduction"],
    ["preventive_execution_rate", "preventive execution rate"],
    ["false_fix_rate", "false-fix rate"],
    ["recovery_p95_seconds", "recovery time p95"],
  ];
  const STATE_ORDER = ["succeeded", "pending_approval", "running", "rolled_back", "failed",
    "interrupted", "refused", "noop", "planned"];

  const $ = (id) => document.getElementById(id);
  let refreshing = null;
  let timer = null;
  let refreshFailed = false;
  let me = null; // whoami
  const ranges = new Map(); // series_id -> history span chosen on its card

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

  /** Store timestamps are UTC: a string without a zone is read as UTC. */
  function parseTime(value) {
    if (value === null || value === undefined || value === "") return null;
    if (typeof value === "number") return value < 1e11 ? value * 1000 : value;
    const text = String(value);
    const zoned = /(Z|[+-]\d\d:?\d\d)$/.test(text) ? text : `${text}Z`;
    const ms = Date.parse(zoned);
    return Number.isNaN(ms) ? null : ms;
  }

  /** UTC as 2026-03-02 14:05. */
  function showTime(value) {
    const ms = parseTime(value);
    if (ms === null) return "—";
    return new Date(ms).toISOString().slice(0, 16).replace("T", " ");
  }

  function inWords(ms) {
    const abs = Math.abs(ms), sign = ms < 0 ? "-" : "";
    if (abs < 3600e3) return `${sign}${Math.round(abs / 60e3)} min`;
    if (abs < 48 * 3600e3) return `${sign}${(abs / 3600e3).toFixed(1)} h`;
    return `${sign}${(abs / 86400e3).toFixed(1)} d`;
  }

  function millis(ms) {
    if (ms === null || ms === undefined) return "—";
    return ms >= 1000 ? `${(ms / 1000).toFixed(ms >= 10000 ? 0 : 1)} s` : `${Math.round(ms)} ms`;
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

  function can(verb) {
    return Boolean(me && me.can && me.can[verb]);
  }

  /** Ask before acting: resolves true on Confirm, false on Cancel or Escape. */
  function confirmStep(text, detail) {
    const dialog = $("confirm");
    $("confirm-text").textContent = text;
    $("confirm-detail").textContent = detail || "";
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.returnValue = "cancel";
      dialog.showModal();
      $("confirm-cancel").focus();
    });
  }

  function tbody(id, rows) {
    $(id).querySelector("tbody").replaceChildren(...rows);
    const empty = $(`${id}-empty`);
    if (empty) empty.hidden = rows.length > 0;
    $(id).hidden = rows.length === 0;
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
    const headers = { Accept: "application/json", Authorization: `Bearer ${token}` };
    const init = { ...(options || {}), headers };
    if (init.json !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(init.json);
      delete init.json;
    }
    const response = await fetch(`${API}/${path}`, init);
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

  /** Run an operator's action after its confirmation; report it; refresh. */
  async function act(question, detail, path, body, done, buttons) {
    if (!(await confirmStep(question, detail))) return false;
    for (const b of buttons || []) b.disabled = true;
    try {
      const result = await api(path, { method: "POST", json: body });
      notice(done(result), false);
    } catch (err) {
      const why = err.status === 403 ? " — your token may not do this (operator role needed)" : "";
      notice(`${question.replace(/\?$/, "")} failed: ${err.message}${why}`, true);
    }
    if (refreshing) await refreshing; // it may have read the state before this action
    await refresh();
    return true;
  }

  // -- pause and control -----------------------------------------------------------

  function renderPause(state) {
    const paused = Boolean(state && state.paused);
    $("paused-banner").hidden = !paused;
    document.body.classList.toggle("paused", paused);
    if (paused) {
      const until = state.until ? ` until ${showTime(state.until)} UTC` : " until resumed";
      $("paused-text").textContent =
        `since ${showTime(state.since)} UTC${until}, by ${state.by || "?"}: ${state.reason || ""}`;
    }
    $("resume").hidden = !(paused && can("pause"));
    $("pause-form").hidden = paused || !can("pause");
    $("pause-state").textContent = paused ? "(paused)" : "(fixes are applied by their rules' modes)";
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
    const what = body.direction === "down" ? "left" : "used";
    const unit = AutofixCharts.unitOf(body.unit, body.metric);
    return {
      history: points(body.history, "value"),
      forecast: points(forecastRows, "value"),
      band: forecastRows
        .map((r) => [parseTime(r.ts), r.lo, r.hi])
        .filter(([t, lo, hi]) => t !== null && Number.isFinite(lo) && Number.isFinite(hi)),
      capacity,
      eta: parseTime(body.eta ?? summary.eta),
      unit,
      label: `${what} (${unit || "value"})`,
    };
  }

  async function fetchSeries(summary) {
    const span = ranges.get(summary.series_id) || "24h";
    try {
      return { body: await api(`series/${encodeURIComponent(summary.series_id)}/forecast?history=${span}`) };
    } catch (err) {
      if (err.status === 401) throw err;
      return { error: err.message };
    }
  }

  function drawSeries(card, summary, fetched) {
    const box = card.querySelector(".chart-box");
    const caption = card.querySelector(".caption");
    if (fetched.error) {
      box.replaceChildren(h("p", { class: "muted" }, `no chart: ${fetched.error}`));
      caption.textContent = "";
      return;
    }
    const body = fetched.body;
    AutofixCharts.forecast(box, chartData(body, summary));
    caption.textContent = body.direction === "down"
      ? "the value counts what is left: it runs out at 0"
      : "the value counts what is used: it runs out at the capacity";
  }

  function rangePicker(summary, card) {
    const select = h("select", { class: "range", "aria-label": "history shown" },
      ...RANGES.map(([value, text]) => h("option", { value }, `last ${text}`)));
    select.value = ranges.get(summary.series_id) || "24h";
    select.addEventListener("change", async () => {
      ranges.set(summary.series_id, select.value);
      select.disabled = true;
      drawSeries(card, summary, await fetchSeries(summary));
      select.disabled = false;
      card.dataset.range = select.value;
    });
    return select;
  }

  function seriesCard(summary) {
    const eta = parseTime(summary.eta);
    const p = Number.isFinite(summary.p_within) ? `${(summary.p_within * 100).toFixed(0)} %` : "—";
    const range = summary.eta_lo || summary.eta_hi
      ? ` (80 %: ${showTime(summary.eta_lo)} – ${showTime(summary.eta_hi)} UTC)` : "";
    const card = h("article", { class: "card", "data-series": summary.series_id });
    card.dataset.range = ranges.get(summary.series_id) || "24h";
    card.append(
      h("div", { class: "card-head" },
        h("h3", {}, `${summary.host} · ${summary.metric}`), rangePicker(summary, card)),
      h("div", { class: "meta" }, labelText(summary.labels)),
      h("div", {},
        h("span", { class: "risk" }, `P(within ${summary.within ?? "24h"}) ${p}`), " · ETA ",
        eta === null ? "none" : `${showTime(summary.eta)} UTC (${eta - Date.now() < 60e3 ? "due now" : `in ${inWords(eta - Date.now())}`})`,
        h("span", { class: "meta" }, range)),
      h("div", { class: "chart-box" }),
      h("div", { class: "meta caption" }),
      h("div", { class: "meta" }, `model ${summary.model ?? "?"} v${summary.model_version ?? "?"},`
        + ` made ${showTime(summary.made_at)} UTC`));
    return card;
  }

  function renderSeries(rows, fetched) {
    const cards = rows.map(seriesCard);
    $("series").replaceChildren(...cards);
    cards.forEach((card, i) => drawSeries(card, rows[i], fetched[i]));
    $("series-empty").hidden = rows.length > 0;
  }

  // -- approvals -----------------------------------------------------------------

  /** The plan in a line: the first steps, and how many more (the fix's page has all). */
  function planText(fix, shown) {
    const steps = (fix.plan || []).map((s) => s.detail || s.op).filter(Boolean);
    if (!steps.length) return fix.reason || "";
    const first = steps.slice(0, shown ?? 3).join("; ");
    return steps.length > (shown ?? 3) ? `${first}; … and ${steps.length - (shown ?? 3)} more steps` : first;
  }

  function verdictButton(fix, verdict, row) {
    const label = verdict[0].toUpperCase() + verdict.slice(1);
    const button = h("button", { type: "button", class: verdict }, label);
    button.addEventListener("click", () => act(
      `${label} fix #${fix.id}?`,
      `${fix.action} on ${fix.target}: ${planText(fix)}`,
      `fixes/${encodeURIComponent(fix.id)}/${verdict}`,
      undefined,
      (result) => `fix #${fix.id} ${verdict === "approve" ? "approved" : verdict === "reject" ? "rejected" : "rolled back"}`
        + (result && result.state ? ` → ${result.state}` : ""),
      row.querySelectorAll("button"),
    ));
    return button;
  }

  function renderApprovals(pending) {
    const rows = items(pending).map((fix) => {
      const row = h("tr", { "data-fix": fix.id },
        h("td", {}, `#${fix.id}`), h("td", {}, fix.action), h("td", {}, fix.target),
        h("td", {}, showTime(fix.requested_at)), h("td", {}, planText(fix)));
      const cell = h("td", { class: "buttons" });
      if (can("approve")) cell.append(verdictButton(fix, "approve", row));
      if (can("reject")) cell.append(verdictButton(fix, "reject", row));
      if (!can("approve")) cell.append(h("span", { class: "muted" }, "an operator decides"));
      row.append(cell);
      return row;
    });
    tbody("approvals", rows);
  }

  // -- jobs, decisions, escalations, silences --------------------------------------

  function renderJobs(jobs) {
    const rows = (jobs || []).filter((j) => j.enabled || j.runs).map((job) => {
      const health = job.last_ok === null ? "never" : job.last_ok ? "ok" : "failed";
      return h("tr", { "data-job": job.job, class: `job ${health}` },
        h("td", {}, job.job),
        h("td", {}, job.schedule + (job.scheduled ? "" : " (not here)")),
        h("td", {}, showTime(job.last_run)),
        h("td", { class: "health" }, health === "failed" ? `failed: ${job.last_error || ""}` : health),
        h("td", { class: "num" }, String(job.runs)),
        h("td", { class: "num" }, String(job.failures)),
        h("td", { class: "num" }, millis(job.p50_ms)),
        h("td", { class: "num" }, millis(job.p95_ms)),
        h("td", {}, showTime(job.next_run)));
    });
    tbody("jobs", rows);
  }

  function renderDecisions(page) {
    const rows = items(page).map((d) => h("tr", { "data-decision": d.id },
      h("td", {}, showTime(d.ts)), h("td", {}, d.rule), h("td", {}, d.target || "—"),
      h("td", {}, h("span", { class: `mode ${stateClass(d.mode)}` }, d.mode)),
      h("td", {}, d.fixes && d.fixes.length
        ? `#${d.fixes.join(", #")} ${d.fix_state || ""}` : "—"),
      h("td", { class: "muted" }, d.reason || "")));
    tbody("decisions", rows);
  }

  function renderEscalations(page) {
    const rows = items(page).map((e) => h("tr", {},
      h("td", {}, showTime(e.ts)), h("td", {}, e.fix_id ? `#${e.fix_id}` : "—"),
      h("td", {}, e.action), h("td", {}, e.target), h("td", {}, e.gate || "—"),
      h("td", { class: "muted" }, e.reason || "")));
    tbody("escalations", rows);
  }

  function matcherText(matchers) {
    return (matchers || []).map((m) => `${m.name}${m.op}"${m.value}"`).join(", ");
  }

  function renderSilences(page) {
    const rows = items(page).filter((s) => s.state !== "expired").map((s) => {
      const row = h("tr", { "data-silence": s.id },
        h("td", {}, `#${s.id}`), h("td", {}, s.state), h("td", {}, matcherText(s.matchers)),
        h("td", {}, showTime(s.starts_at)), h("td", {}, showTime(s.ends_at)),
        h("td", {}, s.creator), h("td", { class: "muted" }, s.comment));
      const cell = h("td", { class: "buttons" });
      if (can("silence")) {
        const button = h("button", { type: "button", class: "expire" }, "Expire");
        button.addEventListener("click", () => act(
          `Expire silence #${s.id}?`, `${matcherText(s.matchers)} — decisions it holds act again`,
          `silences/${s.id}/expire`, undefined, () => `silence #${s.id} expired`, [button]));
        cell.append(button);
      }
      row.append(cell);
      return row;
    });
    tbody("silences", rows);
    $("silence-form").hidden = !can("silence");
  }

  // -- the fix timeline ----------------------------------------------------------

  function renderFixes(fixes) {
    const rows = items(fixes).slice(0, RECENT);
    const dots = rows.map((fix) => ({
      time: parseTime(fix.updated_at || fix.requested_at),
      state: stateClass(fix.state),
      label: `#${fix.id} ${fix.action} on ${fix.target}`,
    })).filter((d) => d.time !== null);
    AutofixCharts.fixes($("timeline"), dots, STATE_ORDER);
    $("timeline").dataset.points = String(dots.length);
    $("fixes").replaceChildren(...rows.map((fix) => {
      const li = h("li", { "data-fix": fix.id },
        h("span", { class: "when" }, `${showTime(fix.updated_at || fix.requested_at)} UTC`),
        h("span", { class: `state ${stateClass(fix.state)}` }, fix.state),
        h("span", {}, `#${fix.id} ${fix.action} on ${fix.target}`),
        h("span", { class: "muted" }, fix.error || fix.reason || ""));
      if (fix.state === "succeeded" && can("rollback")) {
        const button = h("button", { type: "button", class: "rollback" }, "Rollback");
        button.addEventListener("click", () => act(
          `Roll back fix #${fix.id}?`, `${fix.action} on ${fix.target} is undone`,
          `fixes/${encodeURIComponent(fix.id)}/rollback`, undefined,
          (r) => `fix #${fix.id} rolled back${r && r.state ? ` → ${r.state}` : ""}`, [button]));
        li.append(button);
      }
      return li;
    }));
  }

  // -- the loop ------------------------------------------------------------------

  async function load() {
    if (me === null) {
      me = await api("whoami");
      $("who").textContent = `${me.name} (${me.role})`;
      document.body.dataset.role = me.role;
    }
    const [pause, kpis, forecasts, pending, fixes, jobs, decisions, escalations, silences] =
      await Promise.all([
        api("pause"),
        api("kpis"),
        api(`forecasts?within=24h&limit=${TOP_SERIES}`),
        api("fixes?state=pending_approval"),
        api(`fixes?limit=${RECENT}`),
        api("jobs"),
        api("decisions?limit=20"),
        api("escalations?limit=20"),
        api("silences"),
      ]);
    const risky = items(forecasts).slice(0, TOP_SERIES);
    const charts = await Promise.all(risky.map(fetchSeries));
    renderPause(pause);
    renderKpis(kpis);
    renderApprovals(pending);
    renderSeries(risky, charts);
    renderJobs(jobs);
    renderDecisions(decisions);
    renderEscalations(escalations);
    renderSilences(silences);
    renderFixes(fixes);
    $("updated").textContent = `updated ${new Date().toISOString().slice(11, 19)} UTC`;
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
    me = null;
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
    me = null;
    clearInterval(timer);
    $("board").hidden = true;
    $("signout").hidden = true;
    $("who").textContent = "";
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
    $("pause-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const reason = $("pause-reason").value.trim();
      const span = $("pause-for").value;
      const body = span ? { reason, for: span } : { reason };
      act("Pause autofix?", `No fix is applied ${span ? `for ${span}` : "until resumed"}: ${reason}`,
        "pause", body, () => "autofix is paused", [event.submitter].filter(Boolean))
        .then((done) => { if (done) $("pause-reason").value = ""; });
    });
    $("resume").addEventListener("click", () => act(
      "Resume autofix?", "Fixes are applied again as their rules' modes say.", "resume",
      undefined, () => "autofix resumed", [$("resume")]));
    $("silence-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const matcher = { name: $("silence-name").value, op: $("silence-op").value,
        value: $("silence-value").value };
      const body = { matchers: [matcher], comment: $("silence-comment").value.trim(),
        for: $("silence-for").value };
      act("Add this silence?", `${matcherText([matcher])} for ${body.for}: matching decisions are recorded, not acted on`,
        "silences", body, (s) => `silence #${s.id} added`, [event.submitter].filter(Boolean))
        .then((done) => { if (done) { $("silence-value").value = ""; $("silence-comment").value = ""; } });
    });
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) signIn(saved); else signOut();
  });
})();
