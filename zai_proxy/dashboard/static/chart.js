/* Small SVG line chart: time on x, zero-based y, gaps for missing values, hover read-out. */
"use strict";

(function () {
  const NS = "http://www.w3.org/2000/svg";
  const H = 170, M = { l: 54, r: 12, t: 10, b: 24 };
  const TIME_STEPS = [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
    43200, 86400];

  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (parent) parent.appendChild(node);
    return node;
  }

  /* A round tick step giving at most 5 intervals up to a top that covers `v`. */
  function niceScale(v) {
    if (!(v > 0)) return { top: 1, step: 0.25 };
    const raw = v / 4, e = Math.pow(10, Math.floor(Math.log10(raw))), f = raw / e;
    const step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * e;
    return { top: step * Math.ceil(v / step - 1e-9), step };
  }

  function timeLabel(t, step) {
    const d = new Date(t * 1000);
    if (step >= 86400) return d.toLocaleDateString([], { month: "short", day: "numeric" });
    const hm = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
    if (step >= 21600) return d.toLocaleDateString([], { weekday: "short" }) + " " + hm;
    if (step < 60) return hm + ":" + String(d.getSeconds()).padStart(2, "0");
    return hm;
  }

  /* spec: {from, to, lines: [{t, v, color, dash, variant, series, label}], fmt, tooltip} */
  function render(svg, spec) {
    const W = Math.max(260, Math.round(svg.getBoundingClientRect().width) || 600);
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("height", H);
    svg.replaceChildren();
    const x0 = M.l, x1 = W - M.r, y0 = H - M.b, y1 = M.t;
    let max = 0, first = Infinity;
    for (const line of spec.lines) line.v.forEach((v, i) => {
      if (v == null || line.t[i] < spec.from) return;
      if (v > max) max = v;
      if (line.t[i] < first) first = line.t[i];
    });
    const { top, step: yStep } = niceScale(max * 1.05);
    // Fresh data covering a sliver of the range: zoom to it rather than draw a dot at the edge.
    const from = Math.max(spec.from, Math.min(first, spec.to - 30) - 0.05 * (spec.to - first));
    spec = Object.assign({}, spec, { from });
    const X = (t) => x0 + ((t - spec.from) / (spec.to - spec.from)) * (x1 - x0);
    const Y = (v) => y0 - (v / top) * (y0 - y1);

    const grid = el("g", { class: "grid" }, svg);
    for (let v = 0; v <= top + yStep / 2; v += yStep) {
      const y = Y(v);
      el("line", { x1: x0, x2: x1, y1: y, y2: y }, grid);
      el("text", { x: x0 - 6, y: y + 4, "text-anchor": "end" }, grid).textContent = spec.fmt(v);
    }
    const span = spec.to - spec.from;
    const step = TIME_STEPS.find((s) => span / s <= 6) || 86400;
    for (let t = Math.ceil(spec.from / step) * step; t <= spec.to; t += step) {
      el("line", { x1: X(t), x2: X(t), y1: y0, y2: y0 + 4, class: "tick" }, grid);
      el("text", { x: X(t), y: H - 6, "text-anchor": "middle" }, grid).textContent =
        timeLabel(t, step);
    }

    for (const line of spec.lines) {
      let d = "", pen = false, count = 0;
      const dots = [];
      line.t.forEach((t, i) => {
        const v = line.v[i];
        if (v == null || t < spec.from) { pen = false; return; }
        count++;
        const isolated = (i === 0 || line.v[i - 1] == null) && line.v[i + 1] == null;
        if (isolated) dots.push([X(t), Y(v)]);
        d += `${pen ? "L" : "M"}${X(t).toFixed(1)},${Y(v).toFixed(1)}`;
        pen = true;
      });
      const attrs = { d: d || "M0,0", class: "line", stroke: line.color,
        "data-variant": line.variant, "data-series": line.series, "data-points": count };
      if (line.dash) attrs["stroke-dasharray"] = line.dash;
      el("path", attrs, svg);
      for (const [cx, cy] of dots) el("circle", { cx, cy, r: 2.5, fill: line.color }, svg);
    }
    hover(svg, spec, X, x0, x1, y0, y1);
  }

  function hover(svg, spec, X, x0, x1, y0, y1) {
    const cross = el("line", { class: "cross", y1, y2: y0, x1: x0, x2: x0, visibility: "hidden" }, svg);
    const tip = spec.tooltip;
    svg.onmouseleave = () => { cross.setAttribute("visibility", "hidden"); tip.hidden = true; };
    svg.onmousemove = (ev) => {
      const box = svg.getBoundingClientRect();
      const px = ((ev.clientX - box.left) / box.width) * svg.viewBox.baseVal.width;
      if (px < x0 || px > x1) return;
      let best = null;
      for (const line of spec.lines) line.t.forEach((t) => {
        if (best === null || Math.abs(X(t) - px) < Math.abs(X(best) - px)) best = t;
      });
      if (best === null) return;
      cross.setAttribute("x1", X(best)); cross.setAttribute("x2", X(best));
      cross.setAttribute("visibility", "visible");
      // Built as nodes, not HTML: line labels carry variant labels scraped from the proxies.
      const rows = spec.lines.map((line) => {
        const v = line.v[line.t.indexOf(best)];
        const mark = document.createElement("i");
        mark.style.borderColor = line.color;
        mark.style.borderStyle = line.dash ? "dashed" : "solid";
        const value = document.createElement("b");
        value.textContent = v == null ? "–" : spec.fmt(v);
        const row = document.createElement("div");
        row.append(mark, String(line.label), value);
        return row;
      });
      const time = document.createElement("div");
      time.className = "tip-time";
      time.textContent = new Date(best * 1000).toLocaleString();
      tip.replaceChildren(time, ...rows);
      tip.hidden = false;
      const left = Math.min(ev.pageX + 14, window.scrollX + document.documentElement.clientWidth - tip.offsetWidth - 8);
      tip.style.left = left + "px";
      tip.style.top = ev.pageY + 14 + "px";
    };
  }

  window.ZChart = { render, niceScale };
})();
