/* selfmon live dashboard: one page, no build step.
 *
 * Layout of this file:
 *   1. helpers: DOM building, formatting, relative times
 *   2. the API and the session (sign in / sign out)
 *   3. navigation between sections
 *   4. charts: a thin uPlot wrapper and SVG sparklines
 *   5. the sections: overview, performance, errors and logs, alerts, users, plugins
 *   6. the live socket
 *   7. start
 *
 * Everything the server sends (names, summaries, log lines) is untrusted: it only ever reaches the page as text
 * (textContent, text nodes, attribute values), never as HTML.
 */
"use strict";

(function () {
  // ---------------------------------------------------------------------------------------------------------------
  // 1. Helpers
  // ---------------------------------------------------------------------------------------------------------------

  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

  /** Builds an element: `el("td", {class: "num"}, "text", node)`. Children are text or nodes, never HTML. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value == null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    appendAll(node, children);
    return node;
  }

  function appendAll(node, children) {
    for (const child of children.flat(Infinity)) {
      if (child == null || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
  }

  /** Replaces an element's children. */
  function fill(node, ...children) {
    node.replaceChildren();
    appendAll(node, children);
  }

  /** Shows a message in a `.message` element (`kind`: "error" or "ok"); an empty text hides it. */
  function say(node, text, kind = "error") {
    node.textContent = text || "";
    node.dataset.kind = kind;
    delete node.dataset.source;
    node.hidden = !text;
  }

  /** A table from column headers and rows of cells (text or nodes); `empty` is shown when there are no rows. */
  function fillTable(table, headers, rows, empty) {
    const head = el("thead", null, el("tr", null, headers.map((h) => el("th", { scope: "col", class: h.num ? "num" : null }, h.label || h))));
    const body = el("tbody");
    if (!rows.length) {
      body.append(el("tr", null, el("td", { colspan: headers.length, class: "empty" }, empty)));
    }
    for (const row of rows) {
      // data-label: on a phone each row is shown as a card, every cell under its column's name (app.css).
      body.append(el("tr", row.attrs || null, row.cells.map((cell, i) =>
        el("td", { class: headers[i].num ? "num" : null, "data-label": headers[i].label || headers[i] || null }, cell))));
    }
    fill(table, head, body);
  }

  const numberFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
  const integerFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const usdFormat = new Intl.NumberFormat(undefined, { style: "currency", currency: "USD" });
  const isNum = (v) => typeof v === "number" && Number.isFinite(v);

  const fmtInt = (v) => (isNum(v) ? integerFormat.format(v) : "—");
  const fmtNum = (v) => (isNum(v) ? numberFormat.format(v) : "—");
  const fmtUsd = (v) => (isNum(v) ? usdFormat.format(v) : "—");
  const fmtPct = (ratio, digits = 0) => (isNum(ratio) ? `${(ratio * 100).toFixed(digits)} %` : "—");

  /** A rate given per minute, in the unit that keeps it readable: "12/min", "3.5/h", "2/day" (not "0/min"). */
  function fmtRate(perMinute) {
    if (!isNum(perMinute)) return "—";
    if (perMinute === 0 || perMinute >= 1) return `${fmtNum(perMinute)}/min`;
    if (perMinute * 60 >= 1) return `${fmtNum(perMinute * 60)}/h`;
    return `${fmtNum(perMinute * 1440)}/day`;
  }

  function fmtMs(ms) {
    if (!isNum(ms)) return "—";
    if (ms === 0) return "0 ms";
    if (ms < 1) return `${ms.toFixed(2)} ms`;
    if (ms < 10) return `${ms.toFixed(1)} ms`;
    if (ms < 1000) return `${Math.round(ms)} ms`;
    return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  }

  function fmtBytes(bytes) {
    if (!isNum(bytes)) return "—";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(bytes) >= 1024 && i < units.length - 1) { bytes /= 1024; i++; }
    return `${bytes.toFixed(i === 0 || bytes >= 100 ? 0 : 1)} ${units[i]}`;
  }

  /** A length of time in words: "45 s", "3 m", "2 h 5 m", "3 d 4 h". */
  function fmtDuration(seconds) {
    if (!isNum(seconds)) return "—";
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} m`;
    const h = Math.floor(m / 60);
    if (h < 24) return m % 60 ? `${h} h ${m % 60} m` : `${h} h`;
    const d = Math.floor(h / 24);
    return h % 24 ? `${d} d ${h % 24} h` : `${d} d`;
  }

  const toDate = (value) => (value == null ? null : new Date(typeof value === "number" ? value : Date.parse(value)));
  const valid = (date) => date instanceof Date && !Number.isNaN(date.getTime());

  function fmtAgo(date) {
    if (!valid(date)) return "—";
    const seconds = (Date.now() - date.getTime()) / 1000;
    if (seconds < -5) return `in ${fmtDuration(-seconds)}`;
    if (seconds < 5) return "just now";
    return `${fmtDuration(seconds)} ago`;
  }

  /** Local time; the date is added when it is not today. */
  function fmtTime(date) {
    if (!valid(date)) return "—";
    const time = date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    if (date.toDateString() === new Date().toDateString()) return time;
    return `${date.toLocaleDateString(undefined, { day: "numeric", month: "short" })} ${time}`;
  }

  /**
   * A <time> whose text is kept current by tickTimes(): "ago" ("3 m ago"), "stamp" ("13:02:11 · 3 m ago") or
   * "for" (the duration since then: "12 m").
   */
  function timeEl(value, mode = "ago") {
    const date = toDate(value);
    if (!valid(date)) return el("span", { class: "muted" }, "—");
    const node = el("time", { datetime: date.toISOString(), title: date.toLocaleString(), "data-rel": mode });
    node.textContent = relText(date, mode);
    return node;
  }

  function relText(date, mode) {
    if (mode === "for") return fmtDuration((Date.now() - date.getTime()) / 1000);
    if (mode === "stamp") return `${fmtTime(date)} · ${fmtAgo(date)}`;
    return fmtAgo(date);
  }

  function tickTimes() {
    for (const node of $$("time[data-rel]")) node.textContent = relText(new Date(node.dateTime), node.dataset.rel);
  }

  /** Guards against answers arriving out of order: only the newest request of a kind may render. */
  const tickets = {};
  const ticket = (kind) => (tickets[kind] = (tickets[kind] || 0) + 1);
  const isCurrent = (kind, t) => tickets[kind] === t;

  const RANGE_SECONDS = { "15m": 900, "1h": 3600, "24h": 86400, "7d": 604800 };

  // ---------------------------------------------------------------------------------------------------------------
  // 2. API and session
  // ---------------------------------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message, details) {
      super(message);
      this.status = status;
      this.code = code;
      this.details = details;
    }
  }

  /** One JSON request to the dashboard server; errors become ApiError with the server's message. */
  async function request(method, url, body) {
    const init = { method, credentials: "same-origin", headers: { accept: "application/json" } };
    if (body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch {
      throw new ApiError(0, "network", "The dashboard server cannot be reached.");
    }
    const text = await response.text().catch(() => "");
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch { json = null; }
    if (!response.ok) {
      const error = (json && json.error) || {};
      let message = error.message || `${response.status} ${response.statusText}`.trim();
      const details = Array.isArray(error.details) ? error.details.filter((d) => d !== error.message) : [];
      if (details.length) message += ` (${details.join("; ")})`;
      throw new ApiError(response.status, error.code || `http_${response.status}`, message, error.details);
    }
    return json;
  }

  /** A call to selfmon's API under /api; a 401 means the session is over. */
  async function api(path, method = "GET", body) {
    try {
      return await request(method, `/api${path}`, body);
    } catch (error) {
      if (error.status === 401) sessionExpired();
      throw error;
    }
  }

  const session = { current: null };

  async function boot() {
    try {
      applySession(await request("GET", "/session"));
    } catch (error) {
      $("#booting").textContent = `selfmon cannot be reached: ${error.message} Reload the page to try again.`;
    }
  }

  function applySession(answer) {
    session.current = answer || {};
    $("#booting").hidden = true;
    if (session.current.auth_required && !session.current.signed_in) showLogin();
    else showApp();
  }

  function showLogin(message) {
    stopLive();
    $("#app").hidden = true;
    $("#login-view").hidden = false;
    $("#key").value = "";
    say($("#login-error"), message || "");
    $("#key").focus();
  }

  function sessionExpired() {
    if (!$("#login-view").hidden) return;
    session.current = { ...session.current, signed_in: false };
    showLogin("Your session has ended. Sign in again.");
  }

  function showApp() {
    const s = session.current;
    $("#login-view").hidden = true;
    $("#app").hidden = false;
    const who = $("#who");
    who.hidden = !(s.auth_required && s.name);
    who.textContent = s.name ? `${s.name}${s.role ? ` · ${s.role}` : ""}` : "";
    $("#logout").hidden = !s.auth_required;
    loaded.clear();
    loadSection("overview");
    route();
    startLive();
  }

  async function onLogin(event) {
    event.preventDefault();
    const input = $("#key");
    const key = input.value.trim();
    input.value = ""; // the key is never kept: not in the page, not in storage
    if (!key) return say($("#login-error"), "Enter an API key.");
    const button = $("#login button[type=submit]");
    button.disabled = true;
    try {
      await request("POST", "/session", { key });
      applySession(await request("GET", "/session"));
    } catch (error) {
      say($("#login-error"), error.message);
      input.focus();
    } finally {
      button.disabled = false;
    }
  }

  async function onLogout() {
    try {
      await request("DELETE", "/session");
    } catch {
      // Signed out or not, the page asks for a key again.
    }
    session.current = { ...session.current, signed_in: false, name: null, role: null };
    showLogin();
  }

  // ---------------------------------------------------------------------------------------------------------------
  // 3. Navigation
  // ---------------------------------------------------------------------------------------------------------------

  const SECTIONS = ["overview", "performance", "logs", "alerts", "users", "plugins"];
  const TITLES = { overview: "Overview", performance: "Performance", logs: "Errors and logs", alerts: "Alerts", users: "Users and AI cost", plugins: "Plugins" };
  /** Sections whose data was fetched; catch-up fetches them again, the others load when opened. */
  const loaded = new Set();
  /** Sections no live event updates (plugins change on reloads): fetched each time they are opened. */
  const FETCHED_ON_OPEN = new Set(["plugins"]);

  const currentSection = () => {
    const name = location.hash.slice(1);
    return SECTIONS.includes(name) ? name : "overview";
  };

  function route() {
    const name = currentSection();
    for (const id of SECTIONS) $(`#${id}`).hidden = id !== name;
    for (const link of $$("#nav a")) {
      if (link.getAttribute("href") === `#${name}`) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    document.title = `${TITLES[name]} · selfmon`;
    // Sections behave as tabs: open each at its top, not where the browser scrolled the anchor to.
    window.scrollTo(0, 0);
    if (!loaded.has(name) || FETCHED_ON_OPEN.has(name)) loadSection(name);
  }

  /**
   * Fetches a section's data; a failure is shown in the section's message (marked as a load failure, so that a
   * later successful load clears it but not the result of an action) and the next visit tries again.
   */
  async function loadSection(name) {
    loaded.add(name);
    const message = $(`#${name === "performance" ? "perf" : name}-message`);
    try {
      await LOADERS[name]();
      if (message && message.dataset.source === "load") say(message, "");
    } catch (error) {
      loaded.delete(name);
      if (error.status === 401 || !message) return;
      say(message, `Could not load ${TITLES[name].toLowerCase()}: ${error.message}`);
      message.dataset.source = "load";
    }
  }

  /** After a reconnect or a lagged socket: everything shown is fetched again. */
  function refreshAll() {
    loaded.add("overview");
    for (const name of Array.from(loaded)) loadSection(name);
  }

  // ---------------------------------------------------------------------------------------------------------------
  // 4. Charts
  // ---------------------------------------------------------------------------------------------------------------

  const THEME = { axis: "#9aa7b4", grid: "rgba(200, 215, 230, 0.09)" };
  /** Axis text in px: 0.8 of the page's font size, which grows on a wall screen (12 px on a phone, 16 px at most). */
  const axisPx = () => Math.round((parseFloat(getComputedStyle(document.documentElement).fontSize) || 16) * 0.8);
  const axisFont = (weight = "") => `${weight}${axisPx()}px system-ui, sans-serif`;
  /** Series styles: colour, dash and marker shape, so no series relies on colour alone. */
  const STYLES = [
    { color: "#4cc9f0", dash: [], shape: "circle", glyph: "●" },
    { color: "#f9c74f", dash: [10, 5], shape: "square", glyph: "■" },
    { color: "#ff7b72", dash: [3, 4], shape: "triangle", glyph: "▲" },
    { color: "#b392f0", dash: [14, 4, 3, 4], shape: "diamond", glyph: "◆" },
  ];

  const charts = new Map(); // container → {plot, key, height}
  const resizer = new ResizeObserver((entries) => {
    for (const entry of entries) {
      const chart = charts.get(entry.target);
      const width = Math.floor(entry.contentRect.width);
      // Resized on the next frame, not inside the observer: the legend may change the container's height, which
      // would otherwise be a resize loop the browser reports as an error.
      if (chart && width > 0 && width !== chart.plot.width) {
        requestAnimationFrame(() => chart.plot.setSize({ width, height: chart.height }));
      }
    }
  });

  function timeAxis(extra) {
    const px = axisPx();
    // `space`: the least room between ticks, so that labels such as "12:45pm" do not run into each other.
    return { stroke: THEME.axis, font: axisFont(), size: Math.round(px * 3.6), space: px * 6, grid: { stroke: THEME.grid, width: 1 }, ticks: { stroke: THEME.grid, width: 1 }, ...extra };
  }

  /** Tick steps for axes of whole counts, so a small range does not show "0, 0, 1, 1". */
  const WHOLE_STEPS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 1e6, 1e7];
  /** Tick steps for dollars, in whole cents, so that no tick is rounded to its neighbour's label. */
  const MONEY_STEPS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 1e5, 1e6];

  /** A y axis with its unit as label and in every tick value. */
  function valueAxis(label, format, extra) {
    return {
      ...extra,
      label, stroke: THEME.axis, font: axisFont(), labelFont: axisFont("600 "), size: axisPx() * 6, labelSize: axisPx() + 9,
      grid: { stroke: THEME.grid, width: 1 }, ticks: { stroke: THEME.grid, width: 1 },
      values: (u, splits) => splits.map((v) => (v == null ? "" : format(v))),
    };
  }

  /** A line series in the n-th style; its legend label starts with the marker glyph drawn on the line. */
  function lineSeries(n, label, format, extra) {
    const style = STYLES[n % STYLES.length];
    return {
      label: `${style.glyph} ${label}`, stroke: style.color, width: 2, dash: style.dash,
      // A value with gaps on both sides has no line to be part of: it is drawn as a dot, or it would not show.
      points: { show: false, filter: isolatedPoints, size: 7, fill: style.color, stroke: style.color },
      spanGaps: false, _shape: style.shape,
      value: legendValue(format),
      ...extra,
    };
  }

  function timeSeries() {
    return { label: "Time", value: legendValue((v) => fmtTime(new Date(v * 1000))) };
  }

  function isolatedPoints(u, seriesIdx) {
    const ys = u.data[seriesIdx];
    const idxs = [];
    for (let j = 0; j < ys.length; j++) if (ys[j] != null && ys[j - 1] == null && ys[j + 1] == null) idxs.push(j);
    return idxs.length ? idxs : null;
  }

  /**
   * A legend value: the one under the cursor, or, while no cursor is on the chart (a wall screen), the latest
   * time that has any value, so the legend is never a row of dashes.
   */
  function legendValue(format) {
    return (u, v, seriesIdx, idx) => {
      if (idx == null) {
        const latest = latestIndex(u);
        v = latest == null ? null : u.data[seriesIdx][latest];
      }
      return v == null ? "—" : format(v);
    };
  }

  function latestIndex(u) {
    const xs = u.data[0] || [];
    for (let j = xs.length - 1; j >= 0; j--) if (u.data.some((ys, i) => i > 0 && ys[j] != null)) return j;
    return null;
  }

  /** Draws each series' marker shape along its line, spaced out, after uPlot has drawn the lines. */
  function markersPlugin() {
    return {
      hooks: {
        draw: [(u) => {
          const xs = u.data[0];
          if (!xs || !xs.length) return;
          const ratio = uPlot.pxRatio;
          const { left, top, width, height } = u.bbox;
          const ctx = u.ctx;
          ctx.save();
          ctx.beginPath();
          ctx.rect(left, top, width, height);
          ctx.clip();
          u.series.forEach((series, i) => {
            if (i === 0 || !series.show || !series._shape) return;
            ctx.fillStyle = series._color;
            let lastX = -Infinity;
            for (let j = 0; j < xs.length; j++) {
              const y = u.data[i][j];
              if (y == null) continue;
              const px = u.valToPos(xs[j], "x", true);
              if (px - lastX < 56 * ratio) continue;
              drawShape(ctx, series._shape, px, u.valToPos(y, series.scale, true), 4.5 * ratio);
              lastX = px;
            }
          });
          ctx.restore();
        }],
      },
    };
  }

  function drawShape(ctx, shape, x, y, r) {
    ctx.beginPath();
    if (shape === "square") ctx.rect(x - r, y - r, 2 * r, 2 * r);
    else if (shape === "triangle") { ctx.moveTo(x, y - r * 1.2); ctx.lineTo(x + r * 1.1, y + r * 0.9); ctx.lineTo(x - r * 1.1, y + r * 0.9); ctx.closePath(); }
    else if (shape === "diamond") { ctx.moveTo(x, y - r * 1.3); ctx.lineTo(x + r, y); ctx.lineTo(x, y + r * 1.3); ctx.lineTo(x - r, y); ctx.closePath(); }
    else ctx.arc(x, y, r, 0, 2 * Math.PI);
    ctx.fill();
  }

  /**
   * Draws or updates the chart in `container`. The plot is reused while its series stay the same (setData), and
   * built anew otherwise. `emptyText` is shown over a chart without any value.
   */
  function renderChart(container, opts, data, emptyText = "No data in this range") {
    const key = JSON.stringify(opts.series.map((s) => s.label)) + JSON.stringify(opts.axes.map((a) => a.label || ""));
    const height = opts.height || Math.max(260, axisPx() * 20); // taller on a wall screen, as its text is
    let chart = charts.get(container);
    if (chart && chart.key === key) {
      chart.plot.setData(data);
    } else {
      if (chart) chart.plot.destroy();
      // The marker plugin reads each series' colour; uPlot turns `stroke` into a function, so keep a copy.
      for (const s of opts.series) if (s._shape) s._color = s.stroke;
      const width = Math.max(container.clientWidth, 280);
      const plot = new uPlot({
        width, height,
        // Room on the right for the last time label, which is centred on the chart's edge.
        padding: [12, Math.round(axisPx() * 2.5), 0, 0],
        legend: { live: true },
        plugins: [markersPlugin()],
        ...opts,
      }, data, container);
      chart = { plot, key, height };
      charts.set(container, chart);
      resizer.observe(container);
    }
    const hasValues = data.slice(1).some((series) => series.some((v) => v != null && v !== 0));
    let overlay = container.querySelector(".chart-empty");
    if (!overlay) container.append((overlay = el("p", { class: "chart-empty" })));
    overlay.textContent = emptyText;
    overlay.hidden = hasValues;
  }

  /** A small SVG line of recent response times; failed runs are marked with a tick below the line. */
  function sparkline(runs) {
    const NS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("viewBox", "0 0 100 30");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    const times = runs.map((r) => r.ms).filter(isNum);
    const title = document.createElementNS(NS, "title");
    title.textContent = times.length
      ? `Response time of the last ${runs.length} runs: ${fmtMs(Math.min(...times))} to ${fmtMs(Math.max(...times))}`
      : "No runs yet";
    svg.setAttribute("aria-label", title.textContent);
    svg.append(title);
    if (runs.length < 2) return svg;
    const max = Math.max(...times, 0.001);
    const x = (i) => (i / (runs.length - 1)) * 100;
    const y = (ms) => 26 - (isNum(ms) ? ms / max : 0) * 23;
    const line = document.createElementNS(NS, "polyline");
    line.setAttribute("points", runs.map((r, i) => `${x(i).toFixed(2)},${y(r.ms).toFixed(2)}`).join(" "));
    line.setAttribute("class", "spark-line");
    svg.append(line);
    runs.forEach((run, i) => {
      if (run.status !== "unhealthy" && run.status !== "degraded") return;
      const tick = document.createElementNS(NS, "line");
      tick.setAttribute("x1", x(i).toFixed(2));
      tick.setAttribute("x2", x(i).toFixed(2));
      tick.setAttribute("y1", "27");
      tick.setAttribute("y2", "30");
      tick.setAttribute("class", `spark-fail spark-${run.status}`);
      svg.append(tick);
    });
    return svg;
  }

  // ---------------------------------------------------------------------------------------------------------------
  // 5a. Overview: check tiles, the system strip and the counters
  // ---------------------------------------------------------------------------------------------------------------

  const STATUS = {
    healthy: { icon: "✔", text: "Healthy" },
    degraded: { icon: "▲", text: "Degraded" },
    unhealthy: { icon: "✖", text: "Unhealthy" },
    unknown: { icon: "?", text: "Unknown" },
  };
  const statusOf = (s) => STATUS[s] || STATUS.unknown;
  const SPARK_RUNS = 40;

  /** name → {name, plugin, status, summary, cause, response_time_ms, last_run, enabled, runs: [{ms, status}]} */
  const checks = new Map();
  const counters = { firing: null, errorsBase: null, errorsLive: 0, errorsSince: 0 };

  async function loadOverview() {
    const t = ticket("overview");
    const health = await api("/v1/health?limit=1000");
    if (!isCurrent("overview", t)) return;
    const histories = await Promise.all((health.checks || []).map((c) =>
      api(`/v1/health/${encodeURIComponent(c.name)}/history?limit=${SPARK_RUNS}`).catch(() => ({ runs: [] }))));
    if (!isCurrent("overview", t)) return;
    checks.clear();
    (health.checks || []).forEach((c, i) => {
      const runs = (histories[i].runs || []).slice().reverse().map((r) => ({ ms: r.duration_ms, status: r.status }));
      checks.set(c.name, { ...c, runs });
    });
    renderTiles();
    await Promise.all([loadAlertCount(), loadErrorCount(), seedSystem()].map((p) => p.catch(() => null)));
  }

  function renderTiles() {
    const container = $("#tiles");
    const sorted = Array.from(checks.values()).sort((a, b) => a.name.localeCompare(b.name));
    fill(container, sorted.map(buildTile));
    $("#tiles-empty").hidden = sorted.length > 0;
    renderCheckCount();
  }

  /** Replaces one check's tile (or adds it, keeping the order by name). */
  function updateTile(name) {
    const check = checks.get(name);
    const tile = buildTile(check);
    const old = $$("#tiles .tile").find((t) => t.dataset.check === name);
    if (old) old.replaceWith(tile);
    else renderTiles();
    renderCheckCount();
  }

  function buildTile(check) {
    const status = check.enabled === false ? "unknown" : check.status || "unknown";
    const info = statusOf(status);
    return el("article", { class: "tile", "data-check": check.name, "data-status": status, "aria-label": `${check.name}: ${info.text}` },
      el("header", { class: "tile-head" },
        el("h3", { class: "tile-name" }, check.name),
        el("span", { class: "status", "data-status": status }, el("span", { class: "status-icon", "aria-hidden": "true" }, info.icon), ` ${info.text}`)),
      check.enabled === false ? el("p", { class: "tile-summary muted" }, "Disabled in the config") : el("p", { class: "tile-summary" }, check.summary || "Not run yet"),
      check.cause ? el("p", { class: "tile-cause" }, "↳ Down because ", el("strong", null, check.cause), " is down") : null,
      sparkline(check.runs || []),
      el("dl", { class: "tile-meta" },
        el("div", null, el("dt", null, "Response"), el("dd", null, fmtMs(check.response_time_ms))),
        el("div", null, el("dt", null, "Last run"), el("dd", null, timeEl(check.last_run))),
        el("div", null, el("dt", null, "Plugin"), el("dd", null, check.plugin || "—"))));
  }

  function renderCheckCount() {
    const all = Array.from(checks.values());
    const failing = all.filter((c) => c.status === "unhealthy" || c.status === "degraded").length;
    $("#count-checks").textContent = all.length ? `${failing} / ${all.length}` : "—";
    $("#count-checks-label").textContent = failing === 1 ? "check failing" : "checks failing";
    $("#counter-checks").dataset.tone = failing ? "bad" : "ok";
  }

  function onCheckRan(data) {
    const check = checks.get(data.check) || { name: data.check, runs: [], enabled: true };
    Object.assign(check, {
      plugin: data.plugin, status: data.status, summary: data.summary, cause: data.cause || null,
      response_time_ms: data.duration_ms, last_run: data.started_at,
    });
    check.runs = (check.runs || []).concat({ ms: data.duration_ms, status: data.status }).slice(-SPARK_RUNS);
    checks.set(data.check, check);
    updateTile(data.check);
  }

  function onHealthChanged(data) {
    const check = checks.get(data.check) || { name: data.check, runs: [], enabled: true };
    Object.assign(check, { plugin: data.plugin, status: data.to, summary: data.summary, cause: data.cause || null });
    checks.set(data.check, check);
    updateTile(data.check);
  }

  async function loadAlertCount() {
    const alerts = await api("/v1/alerts?limit=1");
    renderAlertCount(alerts.active || []);
  }

  function renderAlertCount(active) {
    const firing = active.filter((a) => a.state === "firing").length;
    counters.firing = firing;
    $("#count-alerts").textContent = fmtInt(firing);
    $("#counter-alerts").dataset.tone = firing ? "bad" : "ok";
    const badge = $("#nav-alerts");
    badge.hidden = !firing;
    badge.textContent = String(firing);
  }

  /** Errors in the last hour: the stored count, then live error records newer than that count. */
  async function loadErrorCount() {
    const errors = await api("/v1/errors?time_window=3600");
    counters.errorsBase = (errors.logs && errors.logs.total_errors) || 0;
    counters.errorsSince = Date.parse(errors.to) || Date.now();
    counters.errorsLive = 0;
    renderErrorCount();
  }

  function renderErrorCount() {
    if (counters.errorsBase == null) return;
    const total = counters.errorsBase + counters.errorsLive;
    $("#count-errors").textContent = fmtInt(total);
    $("#counter-errors").dataset.tone = total ? "warn" : "ok";
  }

  // System strip --------------------------------------------------------------------------------------------------

  const SYSTEM_METRICS = ["system_cpu_usage_ratio", "system_memory_used_ratio", "system_memory_used_bytes",
    "system_memory_total_bytes", "system_load1", "system_disk_used_ratio",
    "system_network_received_bytes_total", "system_network_transmitted_bytes_total"];
  const network = { previous: null }; // {t, rx, tx}: the last counter totals, to compute rates

  /** Fills the strip from the last few minutes of stored samples, before the first live sample arrives. */
  async function seedSystem() {
    const from = Math.floor(Date.now() / 1000) - 180;
    const answers = await Promise.all(SYSTEM_METRICS.map((name) =>
      api(`/v1/metrics?name=${name}&from=${from}`).catch(() => ({ series: [] }))));
    // Replay the last two sample times so the network rate is known at once.
    const byTime = new Map();
    for (const answer of answers) {
      for (const series of answer.series || []) {
        for (const [t, value] of (series.points || []).slice(-2)) {
          if (!byTime.has(t)) byTime.set(t, []);
          byTime.get(t).push({ name: series.name, labels: series.labels || {}, value });
        }
      }
    }
    network.previous = null;
    for (const t of Array.from(byTime.keys()).sort((a, b) => a - b)) applySystem(byTime.get(t), t);
  }

  function onSystemSampled(data, at) {
    applySystem(data.samples || [], Date.parse(at) || Date.now());
  }

  function applySystem(samples, t) {
    const values = (name) => samples.filter((s) => s.name === name && isNum(s.value));
    const one = (name) => (values(name)[0] || {}).value;
    const cpu = one("system_cpu_usage_ratio");
    if (isNum(cpu)) {
      const load = one("system_load1");
      setSys("cpu", fmtPct(cpu), cpu, isNum(load) ? `load ${load.toFixed(2)}` : "");
    }
    const mem = one("system_memory_used_ratio");
    if (isNum(mem)) setSys("mem", fmtPct(mem), mem, `${fmtBytes(one("system_memory_used_bytes"))} of ${fmtBytes(one("system_memory_total_bytes"))}`);
    const disks = values("system_disk_used_ratio");
    if (disks.length) {
      const worst = disks.reduce((a, b) => (b.value > a.value ? b : a));
      setSys("disk", fmtPct(worst.value), worst.value, `${worst.labels.mount || "?"} (fullest of ${disks.length})`);
    }
    updateNetwork(values("system_network_received_bytes_total"), values("system_network_transmitted_bytes_total"), t);
  }

  /** Counters to rates: bytes per second between this sample and the previous one, loopback left out. */
  function updateNetwork(received, transmitted, t) {
    if (!received.length && !transmitted.length) return;
    const total = (list) => list.filter((s) => s.labels.interface !== "lo").reduce((sum, s) => sum + s.value, 0);
    const now = { t, rx: total(received), tx: total(transmitted) };
    const prev = network.previous;
    network.previous = now;
    if (!prev || now.t <= prev.t) return;
    const seconds = (now.t - prev.t) / 1000;
    const rx = (now.rx - prev.rx) / seconds;
    const tx = (now.tx - prev.tx) / seconds;
    if (rx < 0 || tx < 0) return; // a counter reset (an interface came back)
    setSys("net", `↓ ${fmtBytes(rx)}/s`, null, `↑ ${fmtBytes(tx)}/s`);
  }

  function setSys(id, value, ratio, sub) {
    const card = $(`#sys-${id}`);
    $(".sys-value", card).textContent = value;
    $(".sys-sub", card).textContent = sub || "";
    if (isNum(ratio)) {
      const bar = $(".bar > span", card);
      if (bar) bar.style.width = `${Math.min(100, Math.max(0, ratio * 100)).toFixed(1)}%`;
      card.dataset.tone = ratio >= 0.9 ? "bad" : ratio >= 0.75 ? "warn" : "ok";
    }
  }

  // ---------------------------------------------------------------------------------------------------------------
  // 5b. Performance
  // ---------------------------------------------------------------------------------------------------------------

  const perf = { range: "1h", target: "", targets: new Map() }; // value → {label, query}

  async function loadPerformance() {
    const t = ticket("perf");
    const [health, table] = await Promise.all([
      api("/v1/health?limit=1000"),
      api(`/v1/performance?time_window=${RANGE_SECONDS[perf.range]}`),
    ]);
    if (!isCurrent("perf", t)) return;
    fillTargets(health.checks || [], table.operations || []);
    renderPerfTables(table);
    await loadPerfSeries();
  }

  function fillTargets(checkList, operations) {
    perf.targets.clear();
    const select = $("#perf-target");
    const checkGroup = el("optgroup", { label: "Checks" });
    for (const c of checkList) {
      const value = `check:${c.name}`;
      perf.targets.set(value, { label: c.name, query: `check=${encodeURIComponent(c.name)}` });
      checkGroup.append(el("option", { value }, c.name));
    }
    const opGroup = el("optgroup", { label: "Operations" });
    for (const op of operations) {
      const value = `op:${JSON.stringify([op.service, op.operation])}`;
      const label = `${op.service} · ${op.operation}`;
      perf.targets.set(value, { label, query: `service=${encodeURIComponent(op.service)}&operation=${encodeURIComponent(op.operation)}` });
      opGroup.append(el("option", { value }, label));
    }
    fill(select, checkGroup.children.length ? checkGroup : null, opGroup.children.length ? opGroup : null,
      perf.targets.size ? null : el("option", { value: "" }, "nothing yet"));
    if (!perf.targets.has(perf.target)) perf.target = perf.targets.keys().next().value || "";
    select.value = perf.target;
    select.disabled = !perf.targets.size;
  }

  async function loadPerfSeries() {
    const target = perf.targets.get(perf.target);
    const latency = $("#perf-latency");
    const throughput = $("#perf-throughput");
    $("#perf-latency-of").textContent = target ? `of ${target.label}` : "";
    $("#perf-throughput-of").textContent = target ? `of ${target.label}` : "";
    if (target) say($("#perf-message"), "");
    if (!target) {
      renderLatency(latency, []);
      renderThroughput(throughput, [], 60);
      say($("#perf-message"), "Nothing to chart yet: no check is configured and no trace was received.", "info");
      return;
    }
    const t = ticket("perf-series");
    const series = await api(`/v1/performance/series?${target.query}&range=${perf.range}`);
    if (!isCurrent("perf-series", t)) return;
    const points = series.points || [];
    renderLatency(latency, points);
    renderThroughput(throughput, points, series.step_seconds || 60, Date.parse(series.to) || Date.now());
  }

  function renderLatency(container, points) {
    const xs = points.map((p) => p.t / 1000);
    renderChart(container, {
      series: [timeSeries(), lineSeries(0, "p50", fmtMs), lineSeries(1, "p95", fmtMs), lineSeries(2, "p99", fmtMs)],
      axes: [timeAxis(), valueAxis("latency", fmtMs)],
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
    }, [xs, points.map((p) => p.p50_ms ?? null), points.map((p) => p.p95_ms ?? null), points.map((p) => p.p99_ms ?? null)]);
  }

  function renderThroughput(container, points, step, end = Date.now()) {
    // Per minute, or per hour when every bucket is below one a minute (a check every 10 minutes: 6/h, not 0.1/min).
    const most = Math.max(0, ...points.map((p) => (isNum(p.count) ? p.count : 0))) / step * 60;
    const [unit, per] = most > 0 && most < 1 ? ["h", 3600] : ["min", 60];
    // The last bucket is still under way: its rate is over the time it has had (not a false drop at the right
    // edge), and left out while that is under half a step.
    const rate = (n, p) => {
      const seconds = Math.min(step, (end - p.t) / 1000);
      return isNum(n) && seconds >= step / 2 ? (n / seconds) * per : null;
    };
    const fmt = (v) => `${fmtNum(v)}/${unit}`;
    renderChart(container, {
      series: [timeSeries(), lineSeries(0, "runs", fmt, { fill: "rgba(76, 201, 240, 0.12)" }), lineSeries(2, "errors", fmt)],
      axes: [timeAxis(), valueAxis(unit === "h" ? "per hour" : "per minute", fmtNum)],
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.15 : 1] } },
    }, [points.map((p) => p.t / 1000), points.map((p) => rate(p.count, p)), points.map((p) => rate(p.errors, p))]);
  }

  const PERF_COLUMNS = [{ label: "Runs", num: true }, { label: "p50", num: true }, { label: "p95", num: true },
    { label: "p99", num: true }, { label: "Error rate", num: true }, { label: "Throughput", num: true }];

  function perfCells(row) {
    return [fmtInt(row.count), fmtMs(row.p50_ms), fmtMs(row.p95_ms), fmtMs(row.p99_ms),
      el("span", { class: row.error_rate > 0 ? "bad-text" : null }, fmtPct(row.error_rate, 1)),
      fmtRate(row.throughput_per_minute)];
  }

  /** A name that picks the charts' target when clicked. */
  function targetButton(value, label) {
    return el("button", { type: "button", class: "link pick-target", "data-target": value }, label);
  }

  function renderPerfTables(table) {
    fillTable($("#perf-checks"), ["Check"].concat(PERF_COLUMNS),
      (table.checks || []).map((c) => ({ cells: [targetButton(`check:${c.check}`, c.check)].concat(perfCells(c)) })),
      "No check ran in this range.");
    fillTable($("#perf-operations"), ["Service", "Operation"].concat(PERF_COLUMNS),
      (table.operations || []).map((o) => ({
        cells: [o.service, targetButton(`op:${JSON.stringify([o.service, o.operation])}`, o.operation)].concat(perfCells(o)),
      })),
      "No spans in this range. Services send them to POST /v1/traces (OTLP/HTTP).");
  }

  function setPerfRange(range) {
    perf.range = range;
    for (const b of $$("#perf-range button")) b.setAttribute("aria-pressed", String(b.dataset.range === range));
    loadSection("performance");
  }

  function setPerfTarget(value) {
    if (!perf.targets.has(value)) return;
    perf.target = value;
    $("#perf-target").value = value;
    loadPerfSeries().catch((error) => say($("#perf-message"), `Could not load the series: ${error.message}`));
  }

  // ---------------------------------------------------------------------------------------------------------------
  // 5c. Errors and logs
  // ---------------------------------------------------------------------------------------------------------------

  const ERROR_LEVELS = new Set(["error", "critical"]);
  const TAIL_MAX = 500;
  const tail = { paused: false, held: [] };

  async function loadLogs() {
    await Promise.all([loadErrorTrends(), runLogSearch()]);
  }

  async function loadErrorTrends() {
    const hours = Number($("#errors-range").value) || 24;
    const period = hours <= 1 ? "minute" : "hour";
    const t = ticket("errors");
    const [aggregate, analysis] = await Promise.all([
      api(`/v1/logs/aggregate?hours=${hours}&period=${period}`),
      api(`/v1/logs/analysis?hours=${hours}`),
    ]);
    if (!isCurrent("errors", t)) return;
    renderErrorChart(aggregate.buckets || [], period);
    renderPatterns((analysis.error_analysis && analysis.error_analysis.templates) || []);
  }

  function renderErrorChart(buckets, period) {
    const count = (bucket, levels) => (bucket.by_level || []).filter((l) => levels.includes(l.name)).reduce((s, l) => s + l.count, 0);
    const fmt = (v) => `${fmtInt(v)}/${period === "minute" ? "min" : "h"}`;
    renderChart($("#errors-chart"), {
      series: [timeSeries(), lineSeries(2, "errors + critical", fmt, { fill: "rgba(255, 123, 114, 0.12)" }), lineSeries(1, "warnings", fmt)],
      axes: [timeAxis(), valueAxis(`records per ${period}`, fmtInt, { incrs: WHOLE_STEPS })],
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? Math.ceil(max * 1.15) : 1] } },
    }, [buckets.map((b) => Date.parse(b.start) / 1000), buckets.map((b) => count(b, ["error", "critical"])), buckets.map((b) => count(b, ["warning"]))],
    "No errors or warnings in this window");
  }

  function renderPatterns(templates) {
    fillTable($("#error-patterns"),
      ["Pattern", { label: "Count", num: true }, "Services", "First seen", "Last seen"],
      templates.map((p) => ({
        cells: [
          el("span", null, p.spike ? [el("span", { class: "badge", "data-tone": "bad" }, "▲ spike"), " "] : null, el("code", { class: "pattern" }, p.template)),
          fmtInt(p.count), (p.services || []).join(", ") || "—", timeEl(p.first_seen, "stamp"), timeEl(p.last_seen, "stamp"),
        ],
      })),
      "No error records in this window.");
  }

  async function runLogSearch() {
    const form = $("#log-search");
    const data = new FormData(form);
    const params = new URLSearchParams({ limit: "200" });
    for (const name of ["q", "level", "service"]) {
      const value = String(data.get(name) || "").trim();
      if (value) params.set(name, value);
    }
    const seconds = RANGE_SECONDS[data.get("range")] || 86400;
    params.set("from", new Date(Date.now() - seconds * 1000).toISOString());
    const t = ticket("search");
    const summary = $("#log-results-summary");
    summary.textContent = "Searching…";
    try {
      const answer = await api(`/v1/logs?${params}`);
      if (!isCurrent("search", t)) return;
      const records = answer.records || [];
      fill($("#log-results"), records.map((r) => logLine(r, "log-line")));
      summary.textContent = records.length
        ? `${fmtInt(records.length)} records, newest first${answer.more ? " (more match: narrow the search)" : ""}`
        : "No record matches.";
    } catch (error) {
      if (isCurrent("search", t)) summary.textContent = `Search failed: ${error.message}`;
      if (error.status !== 400) throw error;
    }
  }

  /** One log record as a line: time, level, service, message. */
  function logLine(record, cls) {
    const date = toDate(record.timestamp);
    const level = String(record.level || "info").toLowerCase();
    return el("li", { class: cls, "data-level": level, "data-id": record.id },
      el("time", { class: "log-time", datetime: valid(date) ? date.toISOString() : null, title: valid(date) ? date.toLocaleString() : null }, fmtTime(date)),
      el("span", { class: "log-level" }, level),
      el("span", { class: "log-service" }, record.service || record.source || "—"),
      el("span", { class: "log-message" }, record.message || "", fieldsText(record.fields)));
  }

  /** A record's structured fields, briefly: `check=db status=unhealthy`. */
  function fieldsText(fields) {
    if (!fields || typeof fields !== "object") return null;
    const text = Object.entries(fields).slice(0, 8)
      .map(([k, v]) => `${k}=${typeof v === "object" && v !== null ? JSON.stringify(v) : v}`).join(" ");
    return text ? el("span", { class: "log-fields" }, text) : null;
  }

  /** A record from the socket: remembered for `after=`, counted when it is an error, shown in the tail. */
  function onLogRecord(record) {
    if (isNum(record.id)) {
      if (record.id <= live.lastLogId) return; // already shown
      live.lastLogId = record.id;
    }
    const level = String(record.level || "").toLowerCase();
    if (ERROR_LEVELS.has(level) && counters.errorsBase != null) {
      const at = Date.parse(record.timestamp);
      if (at > counters.errorsSince && at > Date.now() - 3600 * 1000) {
        counters.errorsLive += 1;
        renderErrorCount();
      }
      refreshErrorTrendsSoon();
    }
    if (tail.paused) {
      tail.held.push(record);
      if (tail.held.length > TAIL_MAX) tail.held.shift();
      renderTailStatus();
    } else {
      addToTail([record]);
    }
  }

  /** Error records arrived: the error chart and patterns are fetched again, at most once every 10 seconds. */
  let trendsRefresh = null;
  function refreshErrorTrendsSoon() {
    if (trendsRefresh || !loaded.has("logs")) return;
    trendsRefresh = setTimeout(() => {
      trendsRefresh = null;
      loadErrorTrends().catch(() => loaded.delete("logs"));
    }, 10000);
  }

  function addToTail(records) {
    const list = $("#tail");
    for (const record of records) list.prepend(logLine(record, "tail-line"));
    while (list.children.length > TAIL_MAX) list.lastElementChild.remove();
    $("#tail-empty").hidden = list.children.length > 0;
    renderTailStatus();
  }

  function toggleTail() {
    tail.paused = !tail.paused;
    if (!tail.paused) {
      const held = tail.held;
      tail.held = [];
      addToTail(held);
    }
    const button = $("#tail-pause");
    button.setAttribute("aria-pressed", String(tail.paused));
    button.textContent = tail.paused ? "Resume" : "Pause";
    renderTailStatus();
  }

  function renderTailStatus(text) {
    const shown = $("#tail").children.length;
    $("#tail-status").textContent = text || (tail.paused
      ? `Paused · ${fmtInt(tail.held.length)} new record${tail.held.length === 1 ? "" : "s"} held`
      : `${fmtInt(shown)} record${shown === 1 ? "" : "s"} (last ${TAIL_MAX} kept)`);
  }

  // ---------------------------------------------------------------------------------------------------------------
  // 5d. Alerts
  // ---------------------------------------------------------------------------------------------------------------

  const SEVERITY_ICON = { critical: "⬢", high: "▲", medium: "◆", low: "●", info: "ℹ" };
  const SILENCE_DURATIONS = [["1h", "1 h"], ["4h", "4 h"], ["24h", "24 h"]];
  const alertsById = new Map();

  async function loadAlerts() {
    const t = ticket("alerts");
    const [alerts, rules, silences] = await Promise.all([
      api("/v1/alerts?limit=50"), api("/v1/alerts/rule-states"), api("/v1/silences?limit=100"),
    ]);
    if (!isCurrent("alerts", t)) return;
    const active = alerts.active || [];
    const recent = (alerts.history && alerts.history.items) || [];
    alertsById.clear();
    for (const a of active.concat(recent)) {
      // selfmon marks `silenced_by` at its next evaluation; a silence made a moment ago already covers the alert.
      if (a.silenced_by == null && a.state !== "resolved") a.silenced_by = coveringSilence(a, silences.items || []);
      alertsById.set(String(a.id), a);
    }
    renderAlertCount(active);
    renderAlertList($("#alerts-active"), active, "No alert is active. All quiet.");
    renderAlertList($("#alerts-recent"), recent, "No alert was resolved recently.");
    renderSilences(silences.items || []);
    renderRules(Array.isArray(rules) ? rules : []);
  }

  /**
   * Alerts are fetched again whenever one fires or resolves: what an operator was typing or choosing in a row, and
   * where the focus was, survive the new rows.
   */
  function renderAlertList(list, alerts, empty) {
    const kept = new Map();
    for (const row of $$("[data-alert-id]", list)) {
      const fields = $$("input, select", row).map((f) => [f.className, f.value, f === document.activeElement]);
      kept.set(row.dataset.alertId, fields);
    }
    fill(list, alerts.length ? alerts.map(alertRow) : el("li", { class: "empty" }, empty));
    for (const row of $$("[data-alert-id]", list)) {
      for (const [cls, value, focused] of kept.get(row.dataset.alertId) || []) {
        const field = row.getElementsByClassName(cls)[0];
        if (!field) continue;
        field.value = value;
        if (focused) field.focus();
      }
    }
  }

  function alertRow(alert) {
    const firing = alert.state === "firing";
    const severity = String(alert.severity || "info").toLowerCase();
    return el("li", { class: "alert-row", "data-alert-id": alert.id, "data-state": alert.state, "data-severity": severity },
      el("div", { class: "alert-main" },
        el("span", { class: "severity", "data-severity": severity }, el("span", { "aria-hidden": "true" }, SEVERITY_ICON[severity] || "●"), ` ${severity}`),
        el("strong", { class: "alert-name" }, alert.name),
        labelChips(alert.labels),
        el("p", { class: "alert-summary" }, alert.summary)),
      el("p", { class: "alert-meta" }, alertMeta(alert)),
      firing ? alertControls(alert) : null);
  }

  function labelChips(labels) {
    return Object.entries(labels || {}).map(([k, v]) => el("span", { class: "chip" }, `${k}=${v}`));
  }

  /** When it started and for how long, escalation, acknowledgement, silence and inhibition, in words. */
  function alertMeta(alert) {
    const parts = [];
    if (alert.state === "resolved") {
      parts.push(el("span", null, "Resolved ", timeEl(alert.resolved_at, "stamp")));
      const start = toDate(alert.fired_at || alert.started_at);
      const end = toDate(alert.resolved_at);
      if (valid(start) && valid(end)) parts.push(`after ${fmtDuration((end - start) / 1000)}`);
    } else {
      const since = alert.fired_at || alert.started_at;
      parts.push(el("span", null, alert.state === "firing" ? "Firing for " : "Pending for ", timeEl(since, "for"), ` (since ${fmtTime(toDate(since))})`));
    }
    parts.push(alert.escalation_step ? `Escalation step ${fmtInt(alert.escalation_step)}` : "Not escalated");
    if (alert.acknowledged_at) {
      parts.push(el("span", { class: "ack-state", "data-acknowledged": "true" }, "✔ Acknowledged",
        alert.acknowledged_by ? ` by ${alert.acknowledged_by}` : "", " ", timeEl(alert.acknowledged_at),
        alert.ack_comment ? `: “${alert.ack_comment}”` : ""));
    } else if (alert.state !== "resolved") {
      parts.push(el("span", { class: "ack-state", "data-acknowledged": "false" }, "Not acknowledged"));
    }
    if (alert.silenced_by != null) parts.push(`Silenced by silence #${alert.silenced_by}`);
    if (alert.inhibited_by) parts.push(`Held back while ${alert.inhibited_by} is down`);
    return parts.flatMap((p, i) => (i ? [" · ", p] : [p]));
  }

  function alertControls(alert) {
    const box = el("div", { class: "alert-controls" });
    if (!alert.acknowledged_at) {
      box.append(el("span", { class: "control-group" },
        el("input", { class: "ack-comment", type: "text", placeholder: "comment", "aria-label": `Comment on ${alert.name}`, maxlength: "500" }),
        el("button", { type: "button", class: "ack" }, "Acknowledge")));
    }
    if (alert.silenced_by == null) {
      box.append(el("span", { class: "control-group" },
        el("select", { class: "silence-duration", "aria-label": "Silence for" }, SILENCE_DURATIONS.map(([v, label]) => el("option", { value: v }, label))),
        el("button", { type: "button", class: "silence" }, "Silence")));
    }
    return box.children.length ? box : null;
  }

  /** The id of an active silence whose matchers all hold for the alert, or null. */
  function coveringSilence(alert, silences) {
    const value = (key) => (key === "rule" ? alert.rule : key === "alertname" ? alert.name : (alert.labels || {})[key]);
    const match = silences.find((s) => s.state === "active" && Object.entries(s.matchers || {}).every(([k, v]) => value(k) === v));
    return match ? match.id : null;
  }

  /**
   * The silence for one alert row: its rule, narrowed by the alert's labels (such as `check=db`), so silencing one
   * failing check does not hide the same rule's alerts for the others.
   */
  function silenceMatchers(alert) {
    return { ...(alert.labels || {}), rule: alert.rule };
  }

  async function onAlertAction(event) {
    const button = event.target.closest("button.ack, button.silence");
    if (!button) return;
    const row = button.closest("[data-alert-id]");
    const alert = alertsById.get(row.dataset.alertId);
    if (!alert) return;
    const comment = (($(".ack-comment", row) || {}).value || "").trim();
    const message = $("#alerts-message");
    for (const b of $$("button", row)) b.disabled = true;
    try {
      if (button.classList.contains("ack")) {
        await api(`/v1/alerts/${encodeURIComponent(alert.id)}/acknowledge`, "POST", comment ? { comment } : {});
        say(message, `Acknowledged “${alert.name}”${alert.labels && alert.labels.check ? ` for ${alert.labels.check}` : ""}. Escalation stops.`, "ok");
      } else {
        const duration = $(".silence-duration", row).value;
        const label = (SILENCE_DURATIONS.find(([v]) => v === duration) || [duration, duration])[1];
        const silence = await api("/v1/silences", "POST", {
          matchers: silenceMatchers(alert), duration, comment: comment || `Silenced from the dashboard for ${label}`,
        });
        say(message, `Silenced “${alert.name}” for ${label} (silence #${silence && silence.id}).`, "ok");
      }
    } catch (error) {
      if (error.status === 401) return;
      say(message, error.status === 403 ? `Not allowed: ${error.message}` : `Failed: ${error.message}`);
    }
    await loadSection("alerts");
  }

  function renderSilences(silences) {
    fillTable($("#silences"), ["Matches", "State", "Starts", "Ends", "Comment", "By", ""],
      silences.map((s) => ({
        cells: [labelChips(s.matchers), el("span", { class: "badge", "data-tone": s.state === "active" ? "warn" : "muted" }, s.state),
          timeEl(s.starts_at, "stamp"), timeEl(s.ends_at, "stamp"), s.comment || "—", s.created_by || "—",
          s.state === "expired" ? "" : el("button", { type: "button", class: "silence-end", "data-silence-id": s.id }, "End now")],
      })),
      "No silences.");
  }

  async function onSilenceEnd(event) {
    const button = event.target.closest("button.silence-end");
    if (!button) return;
    button.disabled = true;
    const message = $("#alerts-message");
    try {
      await api(`/v1/silences/${encodeURIComponent(button.dataset.silenceId)}`, "DELETE");
      say(message, `Silence #${button.dataset.silenceId} ended.`, "ok");
    } catch (error) {
      if (error.status === 401) return;
      say(message, error.status === 403 ? `Not allowed: ${error.message}` : `Failed: ${error.message}`);
    }
    await loadSection("alerts");
  }

  function renderRules(rules) {
    const order = { firing: 0, pending: 1, inactive: 2 };
    const sorted = rules.slice().sort((a, b) => (order[a.state] ?? 3) - (order[b.state] ?? 3) || a.name.localeCompare(b.name));
    fillTable($("#rules"), ["Rule", "State", "Severity", "Condition", "For", "Last evaluated"],
      sorted.map((r) => ({
        cells: [
          el("span", null, el("strong", null, r.name), el("span", { class: "muted small" }, ` ${r.plugin} · ${r.origin}${r.enabled ? "" : " · disabled"}`)),
          el("span", { class: "badge", "data-tone": r.state === "firing" ? "bad" : r.state === "pending" ? "warn" : "muted" }, r.state),
          r.severity || "—",
          el("span", null, r.condition ? el("code", null, r.condition) : null, el("span", { class: "muted small block" }, r.description || "")),
          r.for_seconds ? fmtDuration(r.for_seconds) : "—",
          r.error ? el("span", { class: "bad-text" }, `✖ ${r.error}`) : timeEl(r.last_evaluation),
        ],
      })),
      "No rules.");
  }

  /** Alerts change in bursts (a check going down fires several): one fetch for the burst. */
  let alertsTimer = null;
  function onAlertEvent() {
    clearTimeout(alertsTimer);
    alertsTimer = setTimeout(() => {
      if (loaded.has("alerts")) loadSection("alerts");
      else loadAlertCount().catch(() => null);
    }, 250);
  }

  // ---------------------------------------------------------------------------------------------------------------
  // 5e. Users and AI cost
  // ---------------------------------------------------------------------------------------------------------------

  async function loadUsers() {
    const t = ticket("users");
    const a = await api("/v1/analytics?days=30");
    if (!isCurrent("users", t)) return;
    const empty = !hasEvents(a);
    $("#users-empty").hidden = !empty;
    $("#users-body").hidden = empty;
    if (!empty) renderUsers(a);
  }

  function hasEvents(a) {
    const n = (v) => (isNum(v) ? v : 0);
    return n(a.users && a.users.active) + n(a.engagement && a.engagement.actions) + n(a.engagement && a.engagement.sessions)
      + n(a.satisfaction && a.satisfaction.ratings) + n(a.ai && a.ai.requests)
      + n(a.conversations && a.conversations.started) + n(a.assessments && a.assessments.started) > 0;
  }

  function stat(label, value, sub) {
    return el("div", { class: "stat" }, el("span", { class: "stat-value" }, value), el("span", { class: "stat-label" }, label), sub ? el("span", { class: "stat-sub" }, sub) : null);
  }

  function renderUsers(a) {
    const users = a.users || {};
    const engagement = a.engagement || {};
    const ai = a.ai || {};
    const budget = ai.budget || {};
    fill($("#users-stats"),
      stat("daily active", fmtInt(users.daily_active)), stat("weekly active", fmtInt(users.weekly_active)),
      stat("monthly active", fmtInt(users.monthly_active)), stat("new users", fmtInt(users.new)),
      stat("AI cost", fmtUsd(ai.cost), `${fmtInt(ai.requests)} requests, ${fmtInt(ai.failed)} failed`));
    const conversations = a.conversations || {};
    fill($("#users-engagement"), el("dl", { class: "facts" },
      fact("Sessions", `${fmtInt(engagement.sessions)} (${fmtNum(engagement.sessions_per_user)} per user)`),
      fact("Session length", `mean ${fmtDuration(engagement.mean_session_seconds)}, median ${fmtDuration(engagement.median_session_seconds)}`),
      fact("Actions", `${fmtInt(engagement.actions)} (${fmtNum(engagement.actions_per_user)} per user)`),
      fact("Top actions", (engagement.top_actions || []).map((x) => `${x.name} ${fmtInt(x.count)}`).join(", ") || "—"),
      fact("Conversations", `${fmtInt(conversations.started)} started, ${fmtInt(conversations.completed)} completed (${fmtPct(conversations.completion_rate)})`)));
    renderSatisfaction(a.satisfaction || {});
    renderAiCost(ai.by_day || [], budget, a.days || 30);
    $("#ai-budget").textContent = budgetText(budget);
    fillTable($("#ai-models"),
      ["Model", { label: "Requests", num: true }, { label: "Failed", num: true }, { label: "Input tokens", num: true },
        { label: "Output tokens", num: true }, { label: "Mean latency", num: true }, { label: "Cost", num: true }],
      (ai.by_model || []).slice().sort((x, y) => (y.cost || 0) - (x.cost || 0)).map((m) => ({
        cells: [`${m.provider} · ${m.model}`, fmtInt(m.requests), fmtInt(m.failed), fmtInt(m.input_tokens), fmtInt(m.output_tokens), fmtMs(m.mean_latency_ms), fmtUsd(m.cost)],
      })),
      "No AI usage in these days.");
  }

  function fact(term, text) {
    return el("div", null, el("dt", null, term), el("dd", null, text));
  }

  function budgetText(budget) {
    const parts = [];
    if (isNum(budget.daily_budget)) parts.push(`last 24 h ${fmtUsd(budget.last_24_hours)} of ${fmtUsd(budget.daily_budget)} a day`);
    if (isNum(budget.monthly_budget)) parts.push(`this month ${fmtUsd(budget.this_month)} of ${fmtUsd(budget.monthly_budget)}`);
    return parts.join(" · ");
  }

  function renderSatisfaction(s) {
    const counts = s.distribution || [];
    const most = Math.max(1, ...counts);
    fill($("#users-satisfaction"),
      el("p", { class: "big" }, isNum(s.average) ? `★ ${s.average.toFixed(1)} / 5` : "No ratings", el("span", { class: "muted small" }, ` from ${fmtInt(s.ratings || 0)} ratings`)),
      el("ol", { class: "bars", "aria-label": "Ratings by stars" }, counts.map((count, i) =>
        el("li", null, el("span", { class: "bars-label" }, `${i + 1} ★`),
          el("span", { class: "bars-track" }, bar(count / most)), el("span", { class: "bars-value" }, fmtInt(count))))));
  }

  function bar(ratio) {
    const span = el("span", { class: "bars-fill" });
    span.style.width = `${(Math.max(0, Math.min(1, ratio)) * 100).toFixed(1)}%`;
    return span;
  }

  /** Daily cost as bars (days without use at 0) against the daily budget as a dashed line. */
  function renderAiCost(byDay, budget, days) {
    const cost = new Map(byDay.map((d) => [d.day, d.cost]));
    const xs = [];
    const ys = [];
    const today = new Date();
    for (let i = days - 1; i >= 0; i--) {
      const day = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() - i, 12));
      xs.push(day.getTime() / 1000); // noon UTC: the same calendar day in nearly every time zone
      ys.push(cost.get(day.toISOString().slice(0, 10)) || 0);
    }
    const limit = isNum(budget.daily_budget) ? budget.daily_budget : null;
    // A budget far above the spending would flatten every bar to nothing: then the axis follows the cost, and the
    // budget is named in the legend instead of drawn.
    const fits = limit != null && limit <= Math.max(0, ...ys) * 4;
    const dayValue = (v) => new Date(v * 1000).toLocaleDateString(undefined, { day: "numeric", month: "short", timeZone: "UTC" });
    const series = [{ label: "Day", value: legendValue(dayValue) },
      lineSeries(0, "cost", fmtUsd, { label: "▮ cost", paths: uPlot.paths.bars({ size: [0.7, 40] }), fill: "rgba(76, 201, 240, 0.45)", dash: [], _shape: null })];
    const data = [xs, ys];
    if (limit != null) {
      const label = fits ? "┅ daily budget" : "┅ daily budget, above this scale";
      series.push(lineSeries(2, "daily budget", fmtUsd, { _shape: null, dash: [10, 6], label }));
      data.push(xs.map(() => limit));
    }
    // Ticks on the bars' days (noon UTC), not on local midnights between them; as many as fit.
    const daySplits = (u) => {
      const all = u.data[0];
      const every = Math.max(1, Math.ceil((all.length * axisPx() * 5.5) / (u.bbox.width / uPlot.pxRatio)));
      return all.filter((x, i) => (all.length - 1 - i) % every === 0);
    };
    renderChart($("#ai-cost-chart"), {
      series,
      axes: [timeAxis({ splits: daySplits, values: (u, splits) => splits.map(dayValue) }), valueAxis("US dollars / day", (v) => (v >= 100 ? `$${fmtInt(v)}` : fmtUsd(v)), { incrs: MONEY_STEPS })],
      scales: {
        x: { time: true, range: (u, min, max) => [min - 43200, max + 43200] },
        y: { range: (u) => {
          const top = Math.max(0, ...u.data[1], ...(fits && u.data[2] ? u.data[2] : []));
          return [0, top > 0 ? top * 1.1 : 1];
        } },
      },
    }, data, "No AI cost in these days");
  }

  // ---------------------------------------------------------------------------------------------------------------
  // 5f. Plugins
  // ---------------------------------------------------------------------------------------------------------------

  /** Failure kinds: [kind, one, many]. Deadline kills come first: a plugin that hangs is the one to look at. */
  const FAILURE_KINDS = [["deadline", "deadline kill", "deadline kills"], ["memory", "memory limit hit", "memory limit hits"],
    ["trap", "trap", "traps"], ["plugin_error", "plugin error", "plugin errors"], ["instantiate", "failed start", "failed starts"]];

  async function loadPlugins() {
    const t = ticket("plugins");
    const [answer, status] = await Promise.all([api("/v1/plugins"), api("/v1/status")]);
    if (!isCurrent("plugins", t)) return;
    fillTable($("#nodes-table"), ["Node", "API", "Version", "Last heartbeat", "Role", "Checks it runs"],
      (status.nodes || []).map((n) => ({ attrs: { "data-node": n.name, "data-live": String(n.live) }, cells: nodeCells(n, status.node) })),
      "No node has announced itself.");
    fillTable($("#plugins-table"), ["Plugin", "Kind", "Version", "Source", "Used by (grants)", "Failures", "Recent failures"],
      (answer.plugins || []).map((p) => ({ attrs: { "data-plugin": p.name }, cells: pluginCells(p) })),
      "No plugins are loaded.");
    const refused = answer.refused || [];
    fill($("#plugins-refused"), refused.length
      ? refused.map((r) => el("li", null, el("code", null, r.file), " — ", el("span", { class: "bad-text" }, r.reason)))
      : el("li", { class: "empty" }, "No plugin file was refused."));
    fill($("#plugins-reload"), lastReload(answer.last_reload));
  }

  /** One node of the store: whether it is alive, whether it leads, and the checks it runs now. */
  function nodeCells(n, self) {
    const state = n.live ? el("span", { class: "ok-text" }, "✔ live") : el("span", { class: "bad-text" }, "✘ gone");
    return [
      el("span", null, el("strong", null, n.name), n.name === self ? el("span", { class: "muted small block" }, "this node") : null),
      n.address ? el("code", null, n.address) : "—",
      n.version,
      el("span", null, state, " · ", timeEl(n.last_heartbeat)),
      n.leader ? "leads: alerting and upkeep" : (n.live ? "runs checks" : "—"),
      n.checks.length
        ? el("details", null, el("summary", null, `${fmtInt(n.checks.length)} check${n.checks.length === 1 ? "" : "s"}`), el("span", { class: "small" }, n.checks.join(", ")))
        : el("span", { class: "muted" }, "none"),
    ];
  }

  /** How the last reload of the plugins folder or the config went. */
  function lastReload(reload) {
    if (!reload) return el("p", { class: "empty" }, "No reload since selfmon started (drop a plugin into its folder, or send SIGHUP).");
    const verdict = reload.applied
      ? el("span", { class: "ok-text" }, "✔ applied")
      : el("span", { class: "bad-text" }, "✘ refused: everything runs as before");
    const list = (items, tone) => el("ul", { class: "plain-list" }, items.map((item) => el("li", tone ? { class: tone } : null, item)));
    return el("div", { "data-applied": String(reload.applied) },
      el("p", null, timeEl(reload.at), ` · ${reload.trigger} · `, verdict),
      reload.errors.length ? list(reload.errors, "bad-text") : null,
      reload.changes.length ? list(reload.changes) : el("p", { class: "muted" }, "Nothing changed."),
      reload.restart_needed.length
        ? el("p", { class: "muted" }, `Take effect at the next start: ${reload.restart_needed.join(", ")}`)
        : null);
  }

  function pluginCells(p) {
    return [
      el("span", null, el("strong", null, p.name), p.description ? el("span", { class: "muted small block" }, p.description) : null),
      p.kind, p.version || "—",
      el("span", null, p.source === "built-in" ? "built-in" : el("code", null, p.source),
        el("span", { class: "muted small block", title: p.sha256 || "" }, `${fmtBytes(p.size_bytes)} · sha256 ${(p.sha256 || "").slice(0, 12)}`)),
      usedBy(p.used_by || []),
      failures(p.failures || {}),
      recentFailures(p.recent_failures || []),
    ];
  }

  function usedBy(users) {
    if (!users.length) return el("span", { class: "muted" }, "unused");
    return el("ul", { class: "plain-list" }, users.map((u) => el("li", null,
      el("span", { class: "muted" }, `${u.kind} `), el("strong", null, u.name),
      el("span", { class: "small block" }, "network: ", (u.network || []).length ? (u.network || []).join(", ") : "none"),
      el("span", { class: "small block" }, "secrets: ", (u.secrets || []).length ? (u.secrets || []).join(", ") : "none"))));
  }

  function failures(counts) {
    const present = FAILURE_KINDS.filter(([kind]) => counts[kind] > 0);
    if (!present.length) return el("span", { class: "ok-text" }, "✔ none");
    return el("ul", { class: "plain-list" }, present.map(([kind, one, many]) => {
      const text = `${fmtInt(counts[kind])} ${counts[kind] === 1 ? one : many}`;
      return el("li", null, kind === "deadline" ? el("span", { class: "badge", "data-tone": "bad" }, `⚠ ${text}`) : text);
    }));
  }

  function recentFailures(list) {
    if (!list.length) return el("span", { class: "muted" }, "—");
    return el("ul", { class: "plain-list" }, list.slice(0, 5).map((f) => el("li", { class: "small" },
      timeEl(f.at), ` · ${f.check} · `, el("span", { class: "badge", "data-tone": f.kind === "deadline" ? "bad" : "muted" }, f.kind), " ",
      el("span", { class: "failure-message" }, f.message))));
  }

  const LOADERS = { overview: loadOverview, performance: loadPerformance, logs: loadLogs, alerts: loadAlerts, users: loadUsers, plugins: loadPlugins };

  // ---------------------------------------------------------------------------------------------------------------
  // 6. The live socket
  // ---------------------------------------------------------------------------------------------------------------

  const live = { socket: null, attempts: 0, timer: null, helloSeen: false, stopped: true, lastLogId: 0 };
  const NOT_SIGNED_IN = 4401;

  const HANDLERS = {
    hello: onHello,
    "health.changed": onHealthChanged,
    "check.ran": onCheckRan,
    "alert.fired": onAlertEvent,
    "alert.resolved": onAlertEvent,
    "system.sampled": onSystemSampled,
    "log.record": onLogRecord,
    lagged: () => refreshAll(),
    "tail.unavailable": (data) => renderTailStatus(data.message || "The live tail is not available."),
  };

  function startLive() {
    live.stopped = false;
    if (!live.socket) connect();
  }

  function stopLive() {
    live.stopped = true;
    live.helloSeen = false; // signing in again loads everything anyway
    clearTimeout(live.timer);
    const socket = live.socket;
    live.socket = null;
    if (socket) socket.close(1000);
    setConnection("connecting");
  }

  function connect() {
    clearTimeout(live.timer);
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const url = `${scheme}${location.host}/ws${live.lastLogId ? `?after=${live.lastLogId}` : ""}`;
    const socket = new WebSocket(url);
    live.socket = socket;
    socket.addEventListener("message", (event) => {
      if (socket !== live.socket) return;
      let frame;
      try { frame = JSON.parse(event.data); } catch { return; }
      const handler = frame && HANDLERS[frame.event];
      if (handler) handler(frame.data || {}, frame.at);
    });
    socket.addEventListener("close", (event) => onSocketClose(socket, event));
  }

  function onHello() {
    // Every connection after the first may have missed events: fetch everything shown again; the tail continues
    // from `after`.
    if (live.helloSeen) refreshAll();
    live.helloSeen = true;
    live.attempts = 0;
    setConnection("live");
  }

  function onSocketClose(socket, event) {
    if (socket !== live.socket) return;
    live.socket = null;
    if (live.stopped) return;
    if (event.code === NOT_SIGNED_IN) {
      sessionExpired();
      return;
    }
    // 1 s, 2 s, 4 s, 8 s, then every 10 s.
    const delay = Math.min(10000, 1000 * 2 ** live.attempts);
    live.attempts += 1;
    setConnection("reconnecting", delay);
    live.timer = setTimeout(connect, delay);
  }

  function reconnectNow() {
    if (live.stopped || live.socket) return;
    live.attempts = 0;
    connect();
  }

  function setConnection(state, delay) {
    const indicator = $("#connection");
    indicator.dataset.state = state;
    $("#connection-text").textContent = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…" }[state];
    const banner = $("#reconnect-banner");
    banner.hidden = state !== "reconnecting";
    if (state === "reconnecting") {
      $("#reconnect-text").textContent = `Connection to selfmon lost. Reconnecting${delay ? ` in ${Math.round(delay / 1000)} s` : ""}… `
        + "Figures may be out of date until then.";
    }
  }

  // ---------------------------------------------------------------------------------------------------------------
  // 7. Start
  // ---------------------------------------------------------------------------------------------------------------

  function bindEvents() {
    window.addEventListener("hashchange", route);
    $("#login").addEventListener("submit", onLogin);
    $("#logout").addEventListener("click", onLogout);
    $("#reconnect-now").addEventListener("click", reconnectNow);
    window.addEventListener("online", reconnectNow);

    $("#perf-range").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-range]");
      if (button) setPerfRange(button.dataset.range);
    });
    $("#perf-target").addEventListener("change", (event) => setPerfTarget(event.target.value));
    $("#performance").addEventListener("click", (event) => {
      const button = event.target.closest("button.pick-target");
      if (!button) return;
      setPerfTarget(button.dataset.target);
      $("#perf-target").scrollIntoView({ block: "nearest", behavior: "smooth" });
    });

    $("#errors-range").addEventListener("change", () => loadErrorTrends().catch((error) => say($("#logs-message"), `Could not load: ${error.message}`)));
    $("#log-search").addEventListener("submit", (event) => {
      event.preventDefault();
      runLogSearch().catch(() => null); // its failure is shown in the results summary
    });
    $("#tail-pause").addEventListener("click", toggleTail);

    $("#alerts-active").addEventListener("click", onAlertAction);
    $("#alerts-active").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && event.target.classList.contains("ack-comment")) {
        $("button.ack", event.target.closest("[data-alert-id]")).click();
      }
    });
    $("#silences").addEventListener("click", onSilenceEnd);

    // Relative times ("3 m ago") move on by themselves; nothing is fetched.
    setInterval(tickTimes, 10000);
  }

  bindEvents();
  renderTailStatus();
  boot();
})();
