// Dashboard: polls /api/dashboard and draws the series with the vendored uPlot (no CDN).
"use strict";
(function () {
  const labels = JSON.parse(document.getElementById("labels").textContent);
  const charts = {};
  const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

  function width(el) { return Math.max(240, el.clientWidth || 320); }

  function lineChart(id, times, named) {
    const el = document.getElementById("chart-" + id);
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

  function analytics(report) {
    const box = document.getElementById("analytics");
    if (!report) return;
    box.textContent = "";
    const pre = document.createElement("pre");
    pre.textContent = JSON.stringify(report, null, 2);
    box.appendChild(pre);
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
