/* Unified-Bench leaderboard: table sorting and filtering, plots, the compare page.
 * Data from entries reaches this script only through the JSON block #page-data and the
 * data-* attributes of server-rendered cells; everything is written with textContent. */
(function () {
  "use strict";

  function pageData() {
    var el = document.getElementById("page-data");
    if (!el) { return {}; }
    try { return JSON.parse(el.textContent || "{}"); } catch (err) { return {}; }
  }

  function sortValue(cell, type) {
    var raw = cell ? cell.getAttribute("data-sort") : null;
    if (raw === null || raw === "") { return null; }
    if (type === "number") {
      var num = parseFloat(raw);
      return isFinite(num) ? num : null;
    }
    return raw.toLowerCase();
  }

  function sortTable(table, column, type, direction) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var keyed = rows.map(function (row) {
      return {
        row: row,
        value: sortValue(row.cells[column], type),
        index: parseInt(row.getAttribute("data-index") || "0", 10),
        group: parseInt(row.getAttribute("data-group") || "0", 10)
      };
    });
    keyed.sort(function (a, b) {
      /* verified (ranked), reported, unverified: a sort never mixes these sections */
      if (a.group !== b.group) { return a.group - b.group; }
      if (a.value === null && b.value === null) { return a.index - b.index; }
      if (a.value === null) { return 1; }  /* missing values always last */
      if (b.value === null) { return -1; }
      var cmp = a.value < b.value ? -1 : (a.value > b.value ? 1 : 0);
      return cmp !== 0 ? cmp * direction : a.index - b.index;
    });
    keyed.forEach(function (item) { body.appendChild(item.row); });
  }

  function initSortable(table) {
    var headers = table.tHead ? table.tHead.rows[0].cells : [];
    Array.prototype.forEach.call(headers, function (th, column) {
      var button = th.querySelector("button.sort");
      if (!button) { return; }
      th.setAttribute("aria-sort", "none");
      button.addEventListener("click", function () {
        var current = th.getAttribute("aria-sort");
        var type = th.getAttribute("data-type") || "text";
        /* numbers start high-to-low (best first), text starts A-Z */
        var first = type === "number" && !th.hasAttribute("data-ascending-first") ? "descending" : "ascending";
        var next = current === first ? (first === "descending" ? "ascending" : "descending") : first;
        Array.prototype.forEach.call(headers, function (other) { other.setAttribute("aria-sort", "none"); });
        th.setAttribute("aria-sort", next);
        sortTable(table, column, type, next === "ascending" ? 1 : -1);
      });
    });
  }

  function initFilters(controls) {
    var table = document.getElementById(controls.getAttribute("data-controls-for"));
    if (!table) { return; }
    var text = controls.querySelector(".filter-text");
    var kind = controls.querySelector(".filter-kind");
    var protocol = controls.querySelector(".filter-protocol");
    var count = controls.querySelector(".row-count");
    function apply() {
      var needle = text ? text.value.trim().toLowerCase() : "";
      var wanted = kind ? kind.value : "";
      var onlyMatch = protocol ? protocol.checked : false;
      var shown = 0;
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
        var ok = (!needle || (row.getAttribute("data-search") || "").indexOf(needle) !== -1) &&
          (!wanted || row.getAttribute("data-kind") === wanted) &&
          (!onlyMatch || row.getAttribute("data-protocol") === "match");
        row.classList.toggle("hidden", !ok);
        if (ok) { shown += 1; }
      });
      if (count) { count.textContent = shown + " of " + table.tBodies[0].rows.length + " rows"; }
    }
    [text, kind, protocol].forEach(function (el) {
      if (el) { el.addEventListener("input", apply); el.addEventListener("change", apply); }
    });
    apply();
  }

  function initPlots(data) {
    if (!data.plots || !data.plots.length || !window.Plotly) { return; }
    data.plots.forEach(function (plot) {
      var el = document.getElementById(plot.id);
      if (el) { window.Plotly.newPlot(el, plot.data, plot.layout, { displaylogo: false, responsive: true }); }
    });
  }

  function fmt(value, signed) {
    if (value === null || value === undefined || !isFinite(value)) { return "\u2014"; }
    var text = value.toFixed(2);
    return signed && value > 0 ? "+" + text : text;
  }

  function cell(row, text, className) {
    var td = document.createElement("td");
    td.textContent = text;
    if (className) { td.className = className; }
    row.appendChild(td);
  }

  function initCompare(data) {
    var info = data.compare;
    var selA = document.getElementById("compare-a");
    var selB = document.getElementById("compare-b");
    if (!info || !selA || !selB || info.runs.length < 2) { return; }
    info.runs.forEach(function (run, i) {
      [selA, selB].forEach(function (sel) {
        var opt = document.createElement("option");
        opt.value = String(i);
        opt.textContent = run.label;
        sel.appendChild(opt);
      });
    });
    function pageIndex(page) {
      for (var i = 0; i < info.runs.length; i += 1) { if (info.runs[i].page === page) { return i; } }
      return -1;
    }
    function partnerOf(i) {
      for (var j = 0; j < info.runs.length; j += 1) {
        if (j !== i && info.runs[j].group === info.runs[i].group) { return j; }
      }
      return i === 0 ? 1 : 0;
    }
    var params = {};
    (window.location.hash || "").replace(/^#/, "").split("&").forEach(function (part) {
      var kv = part.split("=");
      if (kv.length === 2) { params[kv[0]] = decodeURIComponent(kv[1]); }
    });
    var a = pageIndex(params.a || "");
    if (a < 0) { a = 0; }
    var b = pageIndex(params.b || "");
    if (b < 0 || b === a) { b = partnerOf(a); }
    selA.value = String(a);
    selB.value = String(b);

    function render() {
      var ia = parseInt(selA.value, 10);
      var ib = parseInt(selB.value, 10);
      var body = document.getElementById("compare-table").tBodies[0];
      var status = document.getElementById("compare-status");
      while (body.firstChild) { body.removeChild(body.firstChild); }
      if (ia === ib) { status.textContent = "Pick two different runs."; return; }
      var lo = Math.min(ia, ib);
      var hi = Math.max(ia, ib);
      var diffs = info.pairs[lo + "-" + hi];
      if (!diffs) { status.textContent = "These two runs were not measured on the same samples; no paired comparison."; return; }
      status.textContent = "B \u2212 A, where A = " + info.runs[ia].label + " and B = " + info.runs[ib].label + ".";
      var sign = ia === lo ? 1 : -1;  /* stored as (higher index) - (lower index) */
      info.metrics.forEach(function (metric, k) {
        var d = diffs[k];
        var mean = d[0] === null ? null : sign * d[0];
        var low = d[1] === null ? null : (sign === 1 ? d[1] : -d[2]);
        var high = d[2] === null ? null : (sign === 1 ? d[2] : -d[1]);
        var row = document.createElement("tr");
        cell(row, metric);
        cell(row, fmt(mean, true));
        cell(row, low === null ? "\u2014" : "[" + fmt(low, true) + ", " + fmt(high, true) + "]");
        cell(row, String(d[3]));
        var significant = low !== null && (low > 0 || high < 0);
        var verdict = mean === null ? "\u2014" : (significant ? (mean > 0 ? "yes, B higher" : "yes, A higher") : "no");
        cell(row, verdict, significant ? "sig-yes" : "sig-no");
        body.appendChild(row);
      });
    }
    selA.addEventListener("change", render);
    selB.addEventListener("change", render);
    render();
  }

  function init() {
    var data = pageData();
    Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), initSortable);
    Array.prototype.forEach.call(document.querySelectorAll(".controls[data-controls-for]"), initFilters);
    initPlots(data);
    initCompare(data);
    document.documentElement.setAttribute("data-ready", "1");
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", init); } else { init(); }
})();
