/* Charts of the autofix dashboard, drawn by uPlot (vendored: uplot.iife.min.js, MIT).
 *
 * AutofixCharts.forecast(el, data) draws one series: history, the forecast to the ETA,
 *   its 80 % band and the capacity, with the value's unit on the axis and in the legend
 *   (hover shows every value at the cursor); drag to zoom, double-click to reset.
 * AutofixCharts.fixes(el, fixes) draws recent fixes as points, one row per state.
 * Times are UTC on every axis: the store's clock, and the CLI's (ISO 8601, `Z`).
 */
"use strict";

const AutofixCharts = (() => {
  const DAY = 86400;
  const UTC = (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC");

  // Tick labels by tick spacing: [spacing s, format, on a new year, -, on a new month,
  // -, on a new day, -, mode 1 = append]. The first tick and every tick where the year
  // (or the day) changes say so on a second line: a chart across New Year reads right.
  const TIME_TICKS = [
    [DAY * 365, "{YYYY}", null, null, null, null, null, null, 1],
    [DAY * 28, "{MMM}", "\n{YYYY}", null, null, null, null, null, 1],
    [DAY, "{MMM} {D}", "\n{YYYY}", null, null, null, null, null, 1],
    [3600, "{HH}:{mm}", "\n{YYYY}-{MM}-{DD}", null, "\n{MMM} {D}", null, null, null, 1],
    [60, "{HH}:{mm}", "\n{YYYY}-{MM}-{DD}", null, "\n{MMM} {D}", null, null, null, 1],
    [1, "{HH}:{mm}:{ss}", "\n{YYYY}-{MM}-{DD}", null, "\n{MMM} {D}", null, null, null, 1],
  ];
  const hoverTime = uPlot.fmtDate("{YYYY}-{MM}-{DD} {HH}:{mm} UTC");

  const drawn = new WeakMap(); // box element -> its uPlot (tests, and redraws)
  const watching = new WeakMap(); // box element -> the ResizeObserver that sizes its chart

  const BYTES = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

  /** A number with its unit, scaled to read: 40 GiB, 250 ms, 93 %. */
  function withUnit(value, unit, digits) {
    if (value === null || value === undefined || !Number.isFinite(value)) return "—";
    const d = digits ?? 3;
    if (unit === "bytes") {
      let v = value, i = 0;
      while (Math.abs(v) >= 1024 && i < BYTES.length - 1) { v /= 1024; i += 1; }
      return `${+v.toPrecision(d)} ${BYTES[i]}`;
    }
    if (unit === "seconds") {
      const abs = Math.abs(value);
      if (abs < 1e-3) return `${+(value * 1e6).toPrecision(d)} µs`;
      if (abs < 1) return `${+(value * 1e3).toPrecision(d)} ms`;
      return `${+value.toPrecision(d)} s`;
    }
    if (unit === "ratio") return `${+(value * 100).toPrecision(d)} %`;
    let v = value, suffix = "";
    for (const [step, name] of [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]]) {
      if (Math.abs(value) >= step) { v = value / step; suffix = name; break; }
    }
    const text = `${+v.toPrecision(d)}${suffix}`;
    return unit ? `${text} ${unit}` : text;
  }

  /** The unit of a series: the store's, else what its Prometheus-style name ends in. */
  function unitOf(unit, metric) {
    if (unit) return unit;
    const name = metric || "";
    if (/_bytes(_total)?$/.test(name)) return "bytes";
    if (/_seconds(_total)?$/.test(name)) return "seconds";
    if (/_ratio$/.test(name)) return "ratio";
    return "";
  }

  /** Byte axes step in powers of 1024 so ticks land on round GiB. */
  function byteIncrs() {
    const out = [];
    for (let p = 1; p < 2 ** 60; p *= 1024) for (const m of [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500]) out.push(p * m);
    return out;
  }

  function width(el) {
    return Math.max(280, Math.floor(el.clientWidth || 460));
  }

  /** Keep a chart as wide as its box. */
  function follow(el, chart, height) {
    if (typeof ResizeObserver === "undefined") return;
    const observer = new ResizeObserver(() => chart.setSize({ width: width(el), height }));
    observer.observe(el);
    watching.set(el, observer);
  }

  /**
   * data: {history: [[tMs, v]], forecast: [[tMs, v]], band: [[tMs, lo, hi]],
   *        capacity: [[tMs, v]] (steps), eta: tMs|null, unit, label}
   */
  function forecast(el, data) {
    // The x span is the history and the forecast; capacity changes before it are folded
    // into its first point (a disk grown months ago must not stretch the chart).
    const span = [...data.history, ...data.forecast, ...data.band].map((r) => r[0]);
    const start = span.length ? Math.min(...span) : null;
    const end = span.length ? Math.max(...span) : null;
    const capSteps = [...data.capacity].sort((a, b) => a[0] - b[0]);
    const capIn = capSteps.filter((r) => start === null || (r[0] > start && r[0] <= end));
    const before = capSteps.filter((r) => start !== null && r[0] <= start).pop();
    if (before) capIn.unshift([start, before[1]]);
    else if (!capIn.length && capSteps.length && start !== null) capIn.push([start, capSteps[0][1]]);
    const times = new Set();
    for (const list of [data.history, data.forecast, data.band, capIn]) {
      for (const row of list) times.add(Math.round(row[0] / 1000));
    }
    const xs = [...times].sort((a, b) => a - b);
    const at = (list, col) => {
      const m = new Map(list.map((r) => [Math.round(r[0] / 1000), r[col]]));
      return xs.map((t) => (m.has(t) ? m.get(t) : null));
    };
    // Capacity holds until it changes (a grown disk): carry it forward to every x.
    let ci = -1;
    const capacity = xs.map((t) => {
      while (ci + 1 < capIn.length && capIn[ci + 1][0] / 1000 <= t) ci += 1;
      return ci >= 0 ? capIn[ci][1] : (capIn.length ? capIn[0][1] : null);
    });
    const cols = [xs, at(data.history, 1), at(data.forecast, 1), at(data.band, 1),
      at(data.band, 2), capacity];
    const unit = data.unit;
    const fmt = (u, v) => withUnit(v, unit);
    const height = 220;
    const opts = {
      width: width(el),
      height,
      tzDate: UTC,
      cursor: { drag: { x: true, y: false }, focus: { prox: 16 } },
      legend: { live: true },
      scales: { x: { time: true } },
      axes: [
        { values: TIME_TICKS, label: "time (UTC)", labelSize: 16, size: 42,
          stroke: "#66707c", grid: { stroke: "#eceff2" } },
        { label: data.label, labelSize: 18, size: 72, stroke: "#66707c",
          grid: { stroke: "#eceff2" }, values: (u, ticks) => ticks.map((v) => withUnit(v, unit)),
          incrs: unit === "bytes" ? byteIncrs() : undefined },
      ],
      series: [
        { label: "time", value: (u, v) => (v === null ? "—" : hoverTime(UTC(v))) },
        { label: "history", stroke: "#0969da", width: 1.5, value: fmt, spanGaps: false,
          points: { show: false } },
        { label: "forecast", stroke: "#bc4c00", width: 1.5, dash: [6, 4], value: fmt,
          spanGaps: true, points: { show: false } },
        { label: "80 % low", stroke: "rgba(188,76,0,0.35)", width: 0.5, value: fmt,
          spanGaps: true, points: { show: false } },
        { label: "80 % high", stroke: "rgba(188,76,0,0.35)", width: 0.5, value: fmt,
          spanGaps: true, points: { show: false } },
        { label: "capacity", stroke: "#cf222e", width: 1, dash: [2, 3], value: fmt,
          points: { show: false } },
      ],
      bands: [{ series: [4, 3], fill: "rgba(188,76,0,0.15)" }],
      hooks: {
        draw: [(u) => {
          if (data.eta === null || data.eta === undefined) return;
          const x = Math.round(u.valToPos(data.eta / 1000, "x", true));
          if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) return;
          const ctx = u.ctx;
          ctx.save();
          ctx.strokeStyle = "#bc4c00";
          ctx.setLineDash([1, 2]);
          ctx.beginPath();
          ctx.moveTo(x, u.bbox.top);
          ctx.lineTo(x, u.bbox.top + u.bbox.height);
          ctx.stroke();
          ctx.fillStyle = "#bc4c00";
          ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
          ctx.fillText("ETA", x + 4, u.bbox.top + 12 * devicePixelRatio);
          ctx.restore();
        }],
      },
    };
    destroy(el);
    const chart = new uPlot(opts, cols, el);
    drawn.set(el, chart);
    follow(el, chart, height);
    return chart;
  }

  function destroy(el) {
    const old = drawn.get(el);
    if (old) old.destroy();
    drawn.delete(el);
    const observer = watching.get(el);
    if (observer) observer.disconnect();
    watching.delete(el);
    el.replaceChildren();
  }

  /** fixes: [{time: ms, state, label}] drawn as points, one row per state. */
  function fixes(el, rows, stateOrder) {
    const states = stateOrder.filter((s) => rows.some((r) => r.state === s));
    const sorted = [...rows].sort((a, b) => a.time - b.time);
    const xs = sorted.map((r) => Math.round(r.time / 1000));
    const series = [{ label: "time", value: (u, v) => (v === null ? "—" : hoverTime(UTC(v))) }];
    const cols = [xs];
    const colors = { succeeded: "#1a7f37", pending_approval: "#0969da", running: "#8250df",
      failed: "#cf222e", interrupted: "#cf222e", rolled_back: "#9a6700" };
    states.forEach((state, i) => {
      cols.push(sorted.map((r) => (r.state === state ? i + 1 : null)));
      series.push({
        label: state.replace(/_/g, " "),
        stroke: colors[state] || "#8c959f",
        fill: colors[state] || "#8c959f",
        paths: () => null,
        points: { show: true, size: 9, stroke: colors[state] || "#8c959f", fill: colors[state] || "#8c959f" },
        value: (u, v, si, idx) => (v === null || idx === null ? "—" : sorted[idx].label),
      });
    });
    const height = 60 + 26 * Math.max(states.length, 1);
    const opts = {
      width: width(el),
      height,
      tzDate: UTC,
      cursor: { drag: { x: true, y: false }, points: { size: 11 } },
      legend: { live: true },
      scales: { x: { time: true }, y: { range: [0.5, states.length + 0.5] } },
      axes: [
        { values: TIME_TICKS, label: "time (UTC)", labelSize: 16, size: 42, stroke: "#66707c",
          grid: { stroke: "#eceff2" } },
        { size: 120, stroke: "#66707c", grid: { stroke: "#eceff2" },
          splits: () => states.map((_, i) => i + 1),
          values: (u, ticks) => ticks.map((v) => (states[v - 1] || "").replace(/_/g, " ")) },
      ],
      series,
    };
    destroy(el);
    if (!rows.length) return null;
    const chart = new uPlot(opts, cols, el);
    drawn.set(el, chart);
    follow(el, chart, height);
    return chart;
  }

  return { forecast, fixes, withUnit, unitOf, chartOf: (el) => drawn.get(el) || null };
})();
