/* Dashboard page: loads /api/metrics, follows /api/events, draws one card per panel. */
"use strict";

(function () {
  const PANELS = [
    { id: "requests", title: "Request rate", fmt: "rate", series: [["rps", "requests"]],
      head: (s) => `${fmt.rate(s.rps)} · ${fmt.count(s.requests)} req` },
    { id: "latency", title: "Latency", fmt: "secs", series: [["p50", "p50"], ["p95", "p95"], ["p99", "p99"]],
      head: (s) => `p50 ${fmt.secs(s.p50)} · p95 ${fmt.secs(s.p95)} · p99 ${fmt.secs(s.p99)}` },
    { id: "ttfb", title: "Time to first byte", fmt: "secs",
      series: [["ttfb_p50", "p50"], ["ttfb_p95", "p95"], ["ttfb_p99", "p99"]],
      head: (s) => `p50 ${fmt.secs(s.ttfb_p50)} · p95 ${fmt.secs(s.ttfb_p95)} · p99 ${fmt.secs(s.ttfb_p99)}` },
    { id: "errors", title: "Errors and 429s", fmt: "rate",
      series: [["err_rate", "5xx"], ["r429_rate", "429 to clients"], ["up429_rate", "upstream 429"]],
      head: (s) => `5xx ${fmt.pct(s.err_rate, s.rps)} · 429 ${fmt.rate(s.r429_rate)} · up 429 ${fmt.rate(s.up429_rate)}` },
    { id: "tokens", title: "Tokens", fmt: "rate",
      series: [["tok_in", "input"], ["tok_out", "output"], ["tok_cache", "cache"]],
      head: (s) => `in ${fmt.rate(s.tok_in)} · out ${fmt.rate(s.tok_out)} · cache ${fmt.rate(s.tok_cache)}` },
    { id: "cost", title: "Estimated cost", fmt: "usd", scale: 3600, series: [["cost_rate", "USD/h"]],
      head: (s) => `${fmt.usd(s.cost_usd)} in window · ${fmt.usdh(s.cost_rate)}` },
    { id: "concurrency", title: "Concurrency vs limit", fmt: "num",
      series: [["inflight", "in flight"], ["conc_limit", "limit"], ["max_workers", "max workers"]],
      head: (s) => `${fmt.num(s.inflight)} in flight · limit ${s.conc_limit ? fmt.num(s.conc_limit) : "none"} · max ${fmt.num(s.max_workers)}` },
    { id: "ratelimit", title: "Rate limit", fmt: "num",
      series: [["rl_rps", "admitted req/s"], ["rl_ceiling", "learned ceiling"], ["queue", "queue depth"]],
      head: (s) => `${fmt.num(s.rl_rps)}/s · ceiling ${s.rl_ceiling ? fmt.num(s.rl_ceiling) : "none"} · queue ${fmt.num(s.queue)}` },
    { id: "retries", title: "Retries", fmt: "rate", series: [["retry_rate", "retries"]],
      head: (s) => `${fmt.rate(s.retry_rate)} · ${fmt.pct(s.retry_rate, s.rps)} of requests` },
    /* Each budget apart (a window may count tokens and credits); the head gives the binding
       (most used) one per window, its unit, and the month's tool calls when reported. */
    { id: "quota", title: "Plan quota used", fmt: "ratio",
      series: [["quota_5h_tokens", "five-hour tokens"], ["quota_5h_credits", "five-hour credits"],
        ["quota_week_tokens", "weekly tokens"], ["quota_week_credits", "weekly credits"]],
      head: (s) => `5h ${fmt.ratio(s.quota_5h)}${binding(s, "5h")} · ${fmt.eta(s.quota_5h_eta, s.quota_5h_reset)}` +
        ` · weekly ${fmt.ratio(s.quota_week)}${binding(s, "week")}` +
        (s.quota_month_calls == null ? "" : ` · tool calls ${fmt.ratio(s.quota_month_calls)}`) },
  ];
  const WINDOWS = [["five_hour", "five-hour window"], ["weekly", "weekly window"]];
  const RANGES = ["5m", "15m", "1h", "6h", "24h", "7d"];
  const DASHES = [null, "6 4", "2 3", "8 2 2 2"];
  /* The unit of account of a window's most used budget: " credits", " tokens" or nothing. */
  const binding = (s, w) => {
    const tokens = s[`quota_${w}_tokens`], credits = s[`quota_${w}_credits`];
    if (credits != null && (tokens == null || credits >= tokens)) return " credits";
    return tokens != null ? " tokens" : "";
  };
  const nf = (d) => new Intl.NumberFormat([], { maximumFractionDigits: d });
  const fmt = {
    num: (v) => v == null ? "–" : Math.abs(v) >= 1e4 ? nf(1).format(v / 1e3) + "k" : nf(v < 10 ? 2 : 1).format(v),
    rate: (v) => v == null ? "–" : fmt.num(v) + "/s",
    count: (v) => v == null ? "–" : nf(0).format(v),
    secs: (v) => v == null ? "–" : v < 1 ? nf(v < 0.01 ? 1 : 0).format(v * 1000) + " ms" : nf(2).format(v) + " s",
    usd: (v) => v == null ? "–" : "$" + nf(v < 1 ? 4 : 2).format(v),
    usdh: (v) => v == null ? "–" : "$" + nf(v * 3600 < 1 ? 4 : 2).format(v * 3600) + "/h",
    pct: (part, whole) => part == null || !whole ? "–" : nf(1).format((100 * part) / whole) + "%",
    ratio: (v) => v == null ? "–" : nf(1).format(100 * v) + "%",
    dur: (v) => v == null ? "–" : v < 90 ? nf(0).format(v) + " s" : v < 5400 ? nf(0).format(v / 60) + " min"
      : v < 172800 ? nf(1).format(v / 3600) + " h" : nf(1).format(v / 86400) + " d",
    /* Time to exhaustion, compared with the reset: the point of showing it. */
    eta: (eta, reset) => {
      if (eta == null) return reset ? `resets in ${fmt.dur(reset - Date.now() / 1000)}` : "no burn yet";
      const left = reset ? reset - Date.now() / 1000 : null;
      return left != null && eta < left ? `out in ${fmt.dur(eta)}, reset in ${fmt.dur(left)}`
        : `lasts to reset${left != null ? " in " + fmt.dur(left) : ""}`;
    },
  };
  const axisFmt = { rate: fmt.num, num: fmt.num, secs: fmt.secs, usd: (v) => "$" + nf(v < 1 ? 3 : 2).format(v),
    ratio: fmt.ratio };

  const key = new URLSearchParams(location.search).get("key");
  const state = { range: localStorage.getItem("zd-range") || "15m", variant: "all", data: null,
    config: null, status: null, lastEventId: null, lastData: 0, es: null, refetchAt: 0, timer: null,
    quota: null, quotaAt: 0 };
  const $ = (id) => document.getElementById(id);

  function api(path) {
    const url = new URL(path, location.origin);
    if (key) url.searchParams.set("key", key);
    return fetch(url, { credentials: "same-origin" }).then((r) => {
      if (r.status === 401) { location.href = "/login"; throw new Error("unauthorized"); }
      if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
      return r.json();
    });
  }

  function variants() {
    const names = new Set(state.data ? state.data.variants : []);
    if (state.status) for (const v of Object.keys(state.status.variants)) names.add(v);
    return [...names].sort();
  }
  /* An element built from data: properties, then children as nodes or text (never parsed as
     HTML), so labels and strings scraped from the proxies show as they are. */
  function h(tag, props = {}, ...children) {
    const node = Object.assign(document.createElement(tag), props);
    node.append(...children.map((c) => c instanceof Node ? c : String(c)));
    return node;
  }
  const colorOf = (v) => `var(--v${Math.max(0, variants().indexOf(v)) % 6})`;
  const shown = () => variants().filter((v) => state.variant === "all" || v === state.variant);

  function buildPanels() {
    const clients = document.createElement("section");
    clients.className = "panel";
    clients.dataset.panel = "clients";
    clients.append(h("h2", {}, "Top clients of the current quota window"), h("div", { className: "clients" }));
    const shares = document.createElement("section");
    shares.className = "panel";
    shares.dataset.panel = "shares";
    const chart = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    chart.setAttribute("class", "chart");
    chart.setAttribute("role", "img");
    chart.setAttribute("aria-label", "Client shares chart");
    shares.append(h("h2", {}, "Client shares of admitted requests (all variants)"),
      h("div", { className: "values" }), chart);
    $("panels").replaceChildren(...PANELS.map((p) => {
      const card = document.createElement("section");
      card.className = "panel";
      card.dataset.panel = p.id;
      const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
      svg.setAttribute("class", "chart");
      svg.setAttribute("role", "img");
      svg.setAttribute("aria-label", `${p.title} chart`);
      card.append(h("h2", {}, p.title), h("div", { className: "values" }), svg,
        h("div", { className: "legend" }));
      return card;
    }), shares, clients);
  }

  /* Who gets the account: each client's share of the admitted upstream attempts per step, every
     variant together (one account); budget used and refusals when there are any. */
  function renderShares() {
    const card = document.querySelector('[data-panel="shares"]');
    const d = state.data;
    if (!card || !d || !d.clients) return;
    const c = d.clients;
    const entries = c.clients.map((row, i) => ({ row, name: String(row.client), series: `client:${row.client}`,
      color: `var(--v${i % 6})`, dash: DASHES[Math.floor(i / 6) % DASHES.length] }));
    if (c.others) entries.push({ row: c.others, name: `others (${c.others.clients})`, series: "others",
      color: "var(--muted)", dash: "2 3" });
    const values = card.querySelector(".values");
    if (!entries.length) {
      values.replaceChildren(h("p", { className: "empty" }, "no admitted requests yet"));
    } else {
      values.replaceChildren(...entries.map((e) => {
        const div = h("div", { className: "value" });
        div.dataset.client = e.series;
        const swatch = h("span", { className: "swatch" });
        swatch.style.background = e.color;
        const r = e.row;
        const extra = (r.budget_used_ratio != null ? ` · budget ${fmt.ratio(r.budget_used_ratio)}` : "") +
          (r.refused_rate ? ` · refused ${fmt.rate(r.refused_rate)}` : "");
        div.append(swatch, h("b", {}, e.name), ` ${fmt.ratio(r.share)} · ${fmt.rate(r.admitted_rate)}${extra}`);
        return div;
      }));
    }
    const lines = entries.map((e) => ({ t: c.t, v: e.row.shares, color: e.color, dash: e.dash,
      variant: "clients", series: e.series, label: e.name }));
    window.ZChart.render(card.querySelector("svg"), { from: d.to - spanOf(d.range), to: d.to,
      lines, fmt: axisFmt.ratio, tooltip: $("tooltip") });
  }

  /* Who burns the budget: tokens since the window began, all variants (one account). */
  function renderClients() {
    const box = document.querySelector('[data-panel="clients"] .clients');
    const q = state.quota;
    if (!box || !q) return;
    const vs = shown();
    box.replaceChildren(...WINDOWS.map(([name, title]) => {
      const w = q.windows[name];
      const div = document.createElement("div");
      div.className = "window";
      div.dataset.window = name;
      const rows = (w ? w.clients : []).map((c) => {
        const tokens = vs.reduce((n, v) => n + (c.by_variant[v] || 0), 0);
        return { ...c, tokens };
      }).filter((c) => c.tokens > 0);
      const budget = w && w.used_ratio != null
        ? `${fmt.ratio(w.used_ratio)} of the budget used${w.unit ? ` (${w.unit})` : ""}` : "no budget reported";
      div.append(h("h3", {}, `${title} `, h("span", {}, budget)));
      if (!rows.length) {
        div.append(Object.assign(document.createElement("p"), { className: "empty", textContent: "no client tokens yet" }));
        return div;
      }
      const table = document.createElement("table");
      table.append(h("thead", {}, h("tr", {}, ...["client", "tokens", "share of tokens", "share of budget"]
        .map((text) => h("th", {}, text)))));
      const body = document.createElement("tbody");
      for (const c of rows) {
        const tr = document.createElement("tr");
        tr.dataset.client = c.client;
        const share = c.share_of_budget;
        const bar = h("span", { className: "bar" });
        bar.style.width = `${(60 * Math.min(1, Number(share) || 0)).toFixed(1)}px`;
        tr.append(h("td", {}, String(c.client)), h("td", {}, fmt.count(c.tokens)),
          h("td", {}, fmt.ratio(c.share_of_tokens)), h("td", {}, bar, fmt.ratio(share)));
        body.append(tr);
      }
      table.append(body);
      div.append(table);
      return div;
    }));
  }

  async function loadQuota() {
    state.quotaAt = Date.now();
    try { state.quota = await api("/api/quota"); renderClients(); } catch (err) { console.warn(err); }
  }

  function renderPanel(p) {
    const card = document.querySelector(`[data-panel="${p.id}"]`);
    const d = state.data;
    if (!card || !d) return;
    const lines = [];
    card.querySelector(".values").replaceChildren(...shown().map((v) => {
      const row = document.createElement("div");
      row.className = "value";
      row.dataset.variant = v;
      const swatch = h("span", { className: "swatch" });
      swatch.style.background = colorOf(v);
      row.append(swatch, h("b", {}, v), " ", p.head(d.summary[v] || {}));
      const cols = d.series[v];
      const scaled = (vals) => p.scale ? vals.map((x) => x == null ? x : x * p.scale) : vals;
      if (cols) p.series.forEach(([col, label], i) => lines.push({ t: cols.t, v: scaled(cols[col] || []),
        color: colorOf(v), dash: DASHES[i], variant: v, series: col, label: `${v} ${label}` }));
      return row;
    }));
    card.querySelector(".legend").replaceChildren(...(p.series.length < 2 ? [] : p.series.map(([, label], i) => {
      const mark = h("i");
      mark.style.borderTopStyle = i ? (i === 1 ? "dashed" : "dotted") : "solid";
      return h("span", {}, mark, label);
    })));
    window.ZChart.render(card.querySelector("svg"), { from: d.to - spanOf(d.range), to: d.to,
      lines, fmt: axisFmt[p.fmt], tooltip: $("tooltip") });
  }

  const spanOf = (r) => ({ "5m": 300, "15m": 900, "1h": 3600, "6h": 21600, "24h": 86400, "7d": 604800 })[r];

  function renderAll() {
    renderSwitches();
    PANELS.forEach(renderPanel);
    renderShares();
    renderClients();
    renderTargets();
  }

  function renderSwitches() {
    const choices = ["all", ...variants()];
    $("variant-switch").replaceChildren(...choices.map((v) => button(v === "all" ? "both" : v,
      v === state.variant, () => { state.variant = v; renderAll(); }, { variantChoice: v })));
    $("range-switch").replaceChildren(...RANGES.map((r) => button(r, r === state.range, () => {
      state.range = r; localStorage.setItem("zd-range", r); load(); }, { range: r })));
  }

  function button(text, active, onclick, data) {
    const b = document.createElement("button");
    b.type = "button"; b.textContent = text; b.onclick = onclick;
    b.setAttribute("aria-pressed", String(active));
    Object.assign(b.dataset, data);
    return b;
  }

  function renderTargets() {
    const s = state.status;
    if (!s) return;
    $("targets").replaceChildren(...s.targets.map((t) => {
      const div = document.createElement("div");
      div.className = "target " + (t.up ? "up" : "down");
      div.dataset.target = t.url;
      div.title = t.last_error || `${t.series} series, ${t.duration_ms} ms`;
      div.append(h("span", { className: "dot" }));
      div.append(`${t.url.replace(/^https?:\/\//, "")} ${t.up ? "· " + (t.variants.join(", ") || "no variants")
        : "· down: " + (t.last_error || "not scraped yet")}`);
      return div;
    }));
    const st = s.storage;
    $("storage-banner").hidden = st.ok;
    $("storage-banner").textContent = st.ok ? "" : `History storage failed (${st.error}); keeping history in memory only.`;
    $("foot").textContent = `scraping every ${s.interval}s · history: ${st.backend}` +
      (state.config ? ` · v${state.config.version}` : "");
  }

  async function load() {
    const range = state.range;
    try {
      const data = await api(`/api/metrics?range=${range}`);
      if (range !== state.range) return;
      state.data = data;
      if (state.variant !== "all" && !variants().includes(state.variant)) state.variant = "all";
      renderAll();
      if (!document.body.dataset.firstData && data.variants.length) {
        document.body.dataset.firstData = String(Math.round(performance.now()));
      }
    } catch (err) { console.warn(err); }
  }

  /* Live points extend the raw-resolution series at once; a throttled reload refreshes the rest. */
  function onMetrics(msg) {
    state.lastData = Date.now();
    const d = state.data;
    const interval = state.config ? state.config.interval : d ? d.step : 5;
    if (d && d.source === "raw" && d.step <= interval * 1.01) {
      for (const [v, row] of Object.entries(msg.points)) {
        const cols = d.series[v] || (d.series[v] = { t: [] });
        if (!d.variants.includes(v)) d.variants.push(v);
        if (cols.t.length && cols.t[cols.t.length - 1] >= row.t) continue;
        const n = cols.t.length;
        cols.t.push(row.t);
        for (const [k, val] of Object.entries(row)) {
          if (k === "t") continue;
          if (!cols[k]) cols[k] = new Array(n).fill(null);
          cols[k].push(val);
        }
        const cut = msg.ts - spanOf(d.range);
        while (cols.t.length && cols.t[0] <= cut) for (const k of Object.keys(cols)) cols[k].shift();
      }
      d.to = msg.ts;
      PANELS.forEach(renderPanel);
    }
    const wait = Math.max(5000, (d ? d.step : 5) * 1000);
    if (Date.now() >= state.refetchAt) { state.refetchAt = Date.now() + wait; setTimeout(load, 200); }
  }

  function connect() {
    const url = new URL("/api/events", location.origin);
    if (key) url.searchParams.set("key", key);
    if (state.lastEventId) url.searchParams.set("lastEventId", state.lastEventId);
    const es = new EventSource(url);
    state.es = es;
    const track = (e) => { if (e.lastEventId) state.lastEventId = e.lastEventId; };
    es.addEventListener("hello", (e) => { state.status = JSON.parse(e.data).status; state.lastData = Date.now(); renderTargets(); indicator(); });
    es.addEventListener("metrics", (e) => { track(e); onMetrics(JSON.parse(e.data)); indicator(); });
    es.addEventListener("status", (e) => {
      track(e); state.status = JSON.parse(e.data); renderTargets();
      if (Date.now() - state.quotaAt >= 5000) loadQuota();
    });
    es.addEventListener("reset", () => load());
    es.onerror = () => {
      indicator();
      if (es.readyState === EventSource.CLOSED) {  // the browser gave up (e.g. HTTP error): retry ourselves
        clearTimeout(state.timer);
        state.timer = setTimeout(connect, 2000 + Math.random() * 1000);
      }
    };
  }

  function indicator() {
    const es = state.es, interval = state.config ? state.config.interval : 5;
    let status = "live", text = "live";
    const down = state.status && state.status.targets.length && state.status.targets.every((t) => !t.up);
    if (!es || es.readyState !== EventSource.OPEN) { status = "disconnected"; text = "disconnected, reconnecting"; }
    else if (Date.now() - state.lastData > (3 * interval + 2) * 1000) { status = "stale"; text = "stale: no data"; }
    else if (down) { status = "stale"; text = "stale: all targets down"; }
    $("conn").dataset.status = status;
    $("conn-text").textContent = text;
  }

  const THEMES = ["auto", "light", "dark"];
  function applyTheme(t) {
    if (t === "auto") delete document.documentElement.dataset.theme;
    else document.documentElement.dataset.theme = t;
    $("theme-toggle").textContent = t;
    $("theme-toggle").title = `Theme: ${t === "auto" ? "follow system" : t} (click to change)`;
    localStorage.setItem("zd-theme", t);
  }

  document.addEventListener("DOMContentLoaded", () => {
    applyTheme(localStorage.getItem("zd-theme") || "auto");
    $("theme-toggle").onclick = () => {
      const cur = THEMES.indexOf($("theme-toggle").textContent);
      applyTheme(THEMES[(cur + 1) % THEMES.length]);
      renderAll();
    };
    buildPanels();
    renderSwitches();
    api("/api/config").then((c) => { state.config = c; }).catch(console.warn);
    load();
    loadQuota();
    connect();
    setInterval(indicator, 1000);
    let resize = null;
    window.addEventListener("resize", () => { clearTimeout(resize); resize = setTimeout(renderAll, 150); });
  });
})();
