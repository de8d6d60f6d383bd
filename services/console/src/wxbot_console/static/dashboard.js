// Dashboard: polls /api/dashboard and draws the series with the vendored uPlot (no CDN).
"use strict";
(function () {
  const labels = JSON.parse(document.getElementById("labels").textContent);
  const charts = {};
  const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

  function width(el) { return Math.max(240, el.clientWidth || 320); }

  function lineChart(id, times, named) {
    const el = document.getElementById("chart-" + id);
    if (!el) return;
    const names = Object.keys(named);
    if (!times.length || !names.length) { el.textContent = el.dataset.empty; delete charts[id]; return; }
    const data = [times].concat(names.map(function (n) { return named[n]; }));
    const key = names.join("|");
    if (charts[id] && charts[id].key === key) { charts[id].plot.setData(data); return; }
    el.textContent = "";
    const series = [{}].concat(names.map(function (n, i) { return { label: n, stroke: COLOURS[i % COLOURS.length], width: 2, spanGaps: true }; }));
    const plot = new uPlot({ width: width(el), height: 200, series: series, axes: [{}, { size: 60 }] }, data, el);
    charts[id] = { plot: plot, key: key };
  }

  function barChart(id, totals, prefix) {
    const el = document.getElementById("chart-" + id);
    const table = document.querySelector("#table-" + id + " tbody");
    const names = Object.keys(totals).filter(function (k) { return k.startsWith(prefix); });
    table.textContent = "";
    names.forEach(function (n) {
      const row = table.insertRow();
      row.insertCell().textContent = n.slice(prefix.length);
      row.insertCell().textContent = String(totals[n]);
    });
    if (!names.length) { el.textContent = el.dataset.empty; delete charts[id]; return; }
    const xs = names.map(function (_, i) { return i + 1; });
    const ys = names.map(function (n) { return totals[n]; });
    const key = names.join("|");
    if (charts[id] && charts[id].key === key) { charts[id].plot.setData([xs, ys]); return; }
    el.textContent = "";
    const plot = new uPlot({
      width: width(el), height: 200, scales: { x: { time: false } },
      axes: [{ values: function (_, ticks) { return ticks.map(function (t) { return names[t - 1] ? names[t - 1].slice(prefix.length) : ""; }); } }, { size: 50 }],
      series: [{}, { label: id, stroke: COLOURS[0], fill: "rgba(31,119,180,0.3)", paths: uPlot.paths.bars({ size: [0.6, 60] }), points: { show: false } }],
    }, [xs, ys], el);
    charts[id] = { plot: plot, key: key };
  }

  function pick(rates, prefix) {
    const out = {};
    Object.keys(rates).forEach(function (k) { if (k.startsWith(prefix)) out[k.slice(prefix.length)] = rates[k]; });
    return out;
  }

  function health(rows) {
    const body = document.querySelector("#health tbody");
    body.textContent = "";
    rows.forEach(function (h) {
      const row = body.insertRow();
      row.insertCell().textContent = h.service;
      const state = row.insertCell();
      state.textContent = h.ready ? labels.ready : labels.not_ready;
      state.className = h.ready ? "ok" : "bad";
      row.insertCell().textContent = h.detail;
    });
  }

  function table(parent, caption, head, rows) {
    const t = document.createElement("table");
    const c = t.createCaption();
    c.textContent = caption;
    const hr = t.createTHead().insertRow();
    head.forEach(function (h) { const th = document.createElement("th"); th.scope = "col"; th.textContent = h; hr.appendChild(th); });
    const body = t.createTBody();
    rows.forEach(function (r) { const tr = body.insertRow(); r.forEach(function (v) { tr.insertCell().textContent = v === null || v === undefined ? "—" : String(v); }); });
    parent.appendChild(t);
  }

  function analytics(report) {
    const box = document.getElementById("analytics");
    if (!report) return;
    box.textContent = "";
    delete charts["analytics-usage"];
    if (report.error) { const p = document.createElement("p"); p.setAttribute("role", "alert"); p.textContent = report.error; box.appendChild(p); return; }
    const verdict = document.createElement("p");
    verdict.id = "ab-verdict";
    verdict.textContent = labels.ab + ": " + (report.verdict || "—");
    box.appendChild(verdict);
    table(box, labels.summary, ["messages", "replies", "active_users", "tokens_in", "tokens_out", "cost", "failed_replies"],
      [[report.messages, report.replies, report.active_users, report.tokens_in, report.tokens_out,
        report.cost === null ? null : report.cost + " " + (report.currency || ""), report.failed_replies]]);
    const usage = (report.usage && (report.usage.hour || report.usage.day)) || [];
    const chart = document.createElement("div");
    chart.id = "chart-analytics-usage";
    chart.className = "plot";
    chart.dataset.empty = labels.no_data;
    box.appendChild(chart);
    lineChart("analytics-usage", usage.map(function (u) { return Date.parse(u.bucket) / 1000; }),
      { messages: usage.map(function (u) { return u.messages; }), active_users: usage.map(function (u) { return u.active_users; }) });
    const lat = report.latency_ms || {};
    table(box, labels.latency, ["stage", "p50 ms", "p95 ms", "n"], Object.keys(lat).map(function (k) { return [k, lat[k].p50_ms, lat[k].p95_ms, lat[k].count]; }));
    table(box, labels.models, ["model", "replies", "tokens_in", "tokens_out", "cost"], (report.models || []).map(function (m) { return [m.model, m.replies, m.tokens_in, m.tokens_out, m.cost]; }));
    const sources = (report.sources && report.sources.replies) || {};
    table(box, labels.sources, ["source", "replies"], Object.keys(sources).map(function (k) { return [k, sources[k]]; }));
    table(box, labels.safety, ["stage", "reason", "blocks"], (report.safety_blocks || []).map(function (b) { return [b.stage, b.reason, b.blocks]; }));
    table(box, labels.ab, ["variant", "answers", "positive_share", "reset_rate", "p50 ms", "cost"], (report.variants || []).map(function (v) {
      return [v.name, v.answers, v.positive_share, v.reset_rate, v.latency_p50_ms, v.cost];
    }));
  }

  async function refresh() {
    try {
      const resp = await fetch("/api/dashboard", { credentials: "same-origin" });
      if (resp.status === 401) { location.href = "/login"; return; }
      const d = await resp.json();
      health(d.health);
      const s = d.series;
      lineChart("traffic", s.time, Object.assign(pick(s.rates, "traffic."), pick(s.rates, "deliveries.")));
      lineChart("latency", s.time, s.stage_ms);
      lineChart("tokens", s.time, pick(s.rates, "tokens."));
      lineChart("lag", s.time, s.lag);
      barChart("sources", s.totals, "source.");
      barChart("safety", s.totals, "safety.");
      analytics(d.analytics);
      document.body.dataset.loaded = "1";
    } catch (e) { /* next poll */ }
  }
  refresh();
  setInterval(refresh, 5000);
})();
