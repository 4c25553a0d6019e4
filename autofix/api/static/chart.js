/* Small SVG charts for the autofix dashboard: no library, no innerHTML.
 *
 * forecastChart({history, forecast, band, capacity, eta, now, unit}) draws one series:
 *   history, forecast: [[timeMs, value], ...]; band: [[timeMs, lo, hi], ...];
 *   capacity: [[timeMs, value], ...] drawn as steps (it changes when a disk grows).
 * timeline(fixes, now) draws fixes as dots on a time axis, classed by state.
 */
"use strict";

const AutofixChart = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const W = 480, H = 200, PAD = { left: 52, right: 10, top: 10, bottom: 22 };

  function el(name, attrs, text) {
    const node = document.createElementNS(NS, name);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function extent(values) {
    let lo = Infinity, hi = -Infinity;
    for (const v of values) if (Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    if (lo === Infinity) return [0, 1];
    if (lo === hi) return [lo - 1, hi + 1];
    return [lo, hi];
  }

  function scale([d0, d1], [r0, r1]) {
    return (v) => r0 + ((v - d0) / (d1 - d0)) * (r1 - r0);
  }

  function linePath(points, x, y) {
    return points.map(([t, v], i) => `${i ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join("");
  }

  function stepPath(points, x, y, tEnd) {
    let d = "";
    points.forEach(([t, v], i) => {
      const next = i + 1 < points.length ? points[i + 1][0] : tEnd;
      d += `${i ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}H${x(next).toFixed(1)}`;
    });
    return d;
  }

  function bandPath(band, x, y) {
    const upper = band.map(([t, , hi], i) => `${i ? "L" : "M"}${x(t).toFixed(1)},${y(hi).toFixed(1)}`);
    const lower = band.slice().reverse().map(([t, lo]) => `L${x(t).toFixed(1)},${y(lo).toFixed(1)}`);
    return upper.join("") + lower.join("") + "Z";
  }

  function formatValue(value, unit) {
    if (unit === "bytes") {
      const units = ["B", "kB", "MB", "GB", "TB", "PB"];
      let v = Math.abs(value), i = 0;
      while (v >= 1000 && i < units.length - 1) { v /= 1000; i += 1; }
      return `${(Math.sign(value) * v).toFixed(v < 10 && i ? 1 : 0)} ${units[i]}`;
    }
    if (unit === "ratio") return `${(value * 100).toFixed(0)} %`;
    const abs = Math.abs(value);
    const text = abs >= 1e6 || (abs > 0 && abs < 0.01) ? value.toExponential(1) : String(+value.toFixed(2));
    return unit ? `${text} ${unit}` : text;
  }

  function formatTime(ms, spanMs) {
    const d = new Date(ms), two = (n) => String(n).padStart(2, "0");
    const hm = `${two(d.getHours())}:${two(d.getMinutes())}`;
    return spanMs > 36 * 3600e3 ? `${two(d.getMonth() + 1)}-${two(d.getDate())} ${hm}` : hm;
  }

  function axes(svg, x, y, tRange, vRange, unit) {
    const [x0, x1] = [PAD.left, W - PAD.right], [y0, y1] = [H - PAD.bottom, PAD.top];
    svg.append(el("line", { class: "axis", x1: x0, y1: y0, x2: x1, y2: y0 }));
    svg.append(el("line", { class: "axis", x1: x0, y1: y0, x2: x0, y2: y1 }));
    for (let i = 0; i <= 3; i += 1) {
      const v = vRange[0] + ((vRange[1] - vRange[0]) * i) / 3;
      svg.append(el("text", { x: x0 - 4, y: y(v) + 3, "text-anchor": "end" }, formatValue(v, unit)));
      const t = tRange[0] + ((tRange[1] - tRange[0]) * i) / 3;
      const anchor = i === 0 ? "start" : i === 3 ? "end" : "middle";
      svg.append(el("text", { x: x(t), y: H - 6, "text-anchor": anchor },
        formatTime(t, tRange[1] - tRange[0])));
    }
  }

  function forecastChart(data) {
    const history = data.history || [], forecast = data.forecast || [];
    const band = data.band || [], capacity = data.capacity || [];
    const times = [...history, ...forecast, ...band, ...capacity].map((p) => p[0]);
    if (data.eta) times.push(data.eta);
    if (data.now) times.push(data.now);
    const tRange = extent(times);
    const values = [
      ...history.map((p) => p[1]), ...forecast.map((p) => p[1]),
      ...band.flatMap((p) => [p[1], p[2]]), ...capacity.map((p) => p[1]), 0,
    ];
    const [lo, hi] = extent(values);
    const vRange = [lo, hi + (hi - lo) * 0.05];
    const x = scale(tRange, [PAD.left, W - PAD.right]);
    const y = scale(vRange, [H - PAD.bottom, PAD.top]);
    const svg = el("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img" });
    svg.append(el("title", {}, data.title || "forecast"));
    axes(svg, x, y, tRange, vRange, data.unit);
    if (band.length) svg.append(el("path", { class: "band", d: bandPath(band, x, y) }));
    if (capacity.length) {
      svg.append(el("path", { class: "capacity", d: stepPath(capacity, x, y, tRange[1]) }));
    }
    if (history.length) svg.append(el("path", { class: "history", d: linePath(history, x, y) }));
    if (forecast.length) svg.append(el("path", { class: "forecast", d: linePath(forecast, x, y) }));
    if (data.now) {
      svg.append(el("line", { class: "now", x1: x(data.now), x2: x(data.now), y1: PAD.top, y2: H - PAD.bottom }));
    }
    if (data.eta) {
      svg.append(el("line", { class: "eta", x1: x(data.eta), x2: x(data.eta), y1: PAD.top, y2: H - PAD.bottom }));
    }
    return svg;
  }

  function timeline(fixes, now) {
    const TW = 960, TH = 60, L = 10, R = 10;
    const times = fixes.map((f) => f.time);
    const tRange = extent([...times, now, now - 3600e3]);
    const x = scale(tRange, [L, TW - R]);
    const svg = el("svg", { viewBox: `0 0 ${TW} ${TH}`, role: "img" });
    svg.append(el("title", {}, "fixes over time"));
    svg.append(el("line", { class: "axis", x1: L, x2: TW - R, y1: 30, y2: 30, stroke: "#d9dde3" }));
    for (let i = 0; i <= 4; i += 1) {
      const t = tRange[0] + ((tRange[1] - tRange[0]) * i) / 4;
      const anchor = i === 0 ? "start" : i === 4 ? "end" : "middle";
      svg.append(el("text", { x: x(t), y: TH - 6, "text-anchor": anchor },
        formatTime(t, tRange[1] - tRange[0])));
    }
    fixes.forEach((fix, i) => {
      const dot = el("circle", { class: `fix ${fix.state}`, cx: x(fix.time), cy: 30 - ((i % 3) - 1) * 8, r: 5 });
      dot.append(el("title", {}, fix.label));
      svg.append(dot);
    });
    return svg;
  }

  return { forecastChart, timeline, formatValue };
})();
