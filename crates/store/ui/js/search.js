// The search page: TraceQL editor or form, time range, a duration-over-time scatter (errors
// marked) and a sortable table; the URL holds query and range (#/search?q=…&range=…).
import { h, clear, state } from "./dom.js";
import { get, stream, rangeSeconds, RANGES, ApiError } from "./api.js";
import { TraceQlEditor } from "./editor.js";
import { duration, time, serviceColour, parseDuration } from "./format.js";
import { insightPanel } from "./insight.js";

const EMPTY_HINT = "Traces appear after the gateway's decision_wait (10 s in all-in-one) plus the batch timeout. " +
  "Send some: run `threadline demo`, or point an OpenTelemetry SDK at 127.0.0.1:4317 (gRPC) / :4318 (HTTP). " +
  "Or widen the time range.";

/// TraceQL from the form's fields.
export function formToTraceQl(f) {
  const parts = [];
  const lit = (v) => (/^-?\d+(\.\d+)?$/.test(v) || v === "true" || v === "false" ? v : JSON.stringify(v));
  if (f.service) parts.push(`resource.service.name = ${JSON.stringify(f.service)}`);
  if (f.name) parts.push(`name = ${JSON.stringify(f.name)}`);
  for (const { key, value } of f.attributes || []) {
    if (!key.trim()) continue;
    const field = /^(span|resource)\./.test(key) || key.startsWith(".") ? key.trim() : `.${key.trim()}`;
    parts.push(`${field} = ${lit(value.trim())}`);
  }
  if (f.status) parts.push(`status = ${f.status}`);
  if (f.minDuration) parts.push(`traceDuration >= ${f.minDuration}`);
  if (f.maxDuration) parts.push(`traceDuration <= ${f.maxDuration}`);
  return parts.length ? `{ ${parts.join(" && ")} }` : "{ }";
}

export function searchPage(root, params, navigate) {
  const range = params.get("range") || "1h";
  const custom = { start: params.get("start") || "", end: params.get("end") || "" };
  const bounds = () => rangeSeconds(rangeSelect.value, startInput.value && toUnix(startInput.value), endInput.value && toUnix(endInput.value));
  const editor = new TraceQlEditor({ value: params.get("q") ?? "{ }", onRun: () => run(true), range: bounds });

  const rangeSelect = h("select", { id: "range", "aria-label": "Time range", onchange: () => { customBox.hidden = rangeSelect.value !== "custom"; run(true); } },
    ...Object.keys(RANGES).map((r) => h("option", { value: r, selected: r === range }, `Last ${r}`)),
    h("option", { value: "custom", selected: range === "custom" }, "Custom…"));
  const startInput = h("input", { type: "datetime-local", "aria-label": "From", step: 1, value: custom.start ? toLocal(custom.start) : "" });
  const endInput = h("input", { type: "datetime-local", "aria-label": "To", step: 1, value: custom.end ? toLocal(custom.end) : "" });
  const customBox = h("span", { class: "row", hidden: range !== "custom" }, startInput, "→", endInput);
  const limitSelect = h("select", { "aria-label": "Result limit" }, ...[20, 100, 500, 1000].map((n) => h("option", { value: n, selected: n === Number(params.get("limit") || 100) }, `${n} traces`)));

  // Form mode: writes the TraceQL.
  const form = {
    service: h("input", { list: "dl-services", placeholder: "any" }),
    name: h("input", { list: "dl-names", placeholder: "any" }),
    status: h("select", {}, ...[["", "any"], ["error", "error"], ["ok", "ok"], ["unset", "unset"]].map(([v, t]) => h("option", { value: v }, t))),
    minDuration: h("input", { placeholder: "e.g. 100ms" }),
    maxDuration: h("input", { placeholder: "e.g. 5s" }),
  };
  const attrRows = h("div", {});
  const addAttr = (key = "", value = "") => {
    const k = h("input", { placeholder: "attribute (e.g. http.route)", list: "dl-attrs", value: key, "aria-label": "Attribute name" });
    const v = h("input", { placeholder: "value", value, "aria-label": "Attribute value" });
    const row = h("div", { class: "row" }, k, "=", v, h("button", { type: "button", "aria-label": "Remove filter", onclick: () => { row.remove(); writeQuery(); } }, "×"));
    row.addEventListener("input", writeQuery);
    attrRows.append(row);
  };
  const writeQuery = () => {
    const attributes = [...attrRows.children].map((r) => { const [k, v] = r.querySelectorAll("input"); return { key: k.value, value: v.value }; });
    editor.value = formToTraceQl({ service: form.service.value.trim(), name: form.name.value.trim(), status: form.status.value, minDuration: form.minDuration.value.trim(), maxDuration: form.maxDuration.value.trim(), attributes });
  };
  for (const input of Object.values(form)) input.addEventListener("input", writeQuery);
  const lists = h("div", {}, h("datalist", { id: "dl-services" }), h("datalist", { id: "dl-names" }), h("datalist", { id: "dl-attrs" }));
  const formBox = h("div", { class: "panel", id: "search-form", hidden: true },
    h("div", { class: "form-grid" },
      h("label", {}, "Service", form.service), h("label", {}, "Span name", form.name), h("label", {}, "Status", form.status),
      h("label", {}, "Min trace duration", form.minDuration), h("label", {}, "Max trace duration", form.maxDuration)),
    attrRows, h("div", { class: "row" }, h("button", { type: "button", onclick: () => addAttr() }, "+ Attribute filter"),
      h("span", { class: "muted" }, "The form writes the TraceQL below; edit it freely.")), lists);

  const tabQuery = h("button", { role: "tab", "aria-selected": "true", onclick: () => mode("query") }, "TraceQL");
  const tabForm = h("button", { role: "tab", "aria-selected": "false", onclick: () => mode("form") }, "Form");
  function mode(m) {
    tabQuery.setAttribute("aria-selected", String(m === "query"));
    tabForm.setAttribute("aria-selected", String(m === "form"));
    formBox.hidden = m !== "form";
    if (m === "form") { fillLists(); form.service.focus(); }
  }
  async function fillLists() {
    const { start, end } = bounds();
    const fill = async (id, tag) => {
      try {
        const body = await get(`/api/v2/search/tag/${encodeURIComponent(tag)}/values`, { start, end });
        const dl = lists.querySelector(`#${id}`);
        clear(dl).append(...(body.tagValues || []).map((v) => h("option", { value: v.value })));
      } catch { /* completion is a help, not required */ }
    };
    fill("dl-services", "resource.service.name");
    fill("dl-names", "name");
    try {
      const body = await get("/api/search/tags", { start, end });
      clear(lists.querySelector("#dl-attrs")).append(...(body.tagNames || []).map((v) => h("option", { value: v })));
    } catch { /* as above */ }
  }

  const runButton = h("button", { class: "primary", id: "run-search", onclick: () => run(true) }, "Search");
  const status = h("div", { class: "muted", "aria-live": "polite" });
  const progress = searchProgress();
  const results = h("div", { class: "results" });
  const insightBox = h("div", {});

  clear(root).append(
    h("h1", {}, "Search traces"),
    h("div", { class: "tabs", role: "tablist" }, tabQuery, tabForm),
    formBox, editor.el,
    h("div", { class: "row" }, rangeSelect, customBox, limitSelect, runButton, progress.el, status),
    results, insightBox,
  );

  let lastTraces = [];
  let running = null;
  const sort = { key: "startMs", desc: true };
  // Results arrive block by block (/api/threadline/search/stream): each partial line's traces are
  // painted at the next frame; the final line is /api/search's answer and replaces them.
  async function run(push) {
    const q = editor.value.trim() || "{ }";
    const { start, end } = bounds();
    if (push) {
      const p = new URLSearchParams({ q, range: rangeSelect.value, limit: limitSelect.value });
      if (rangeSelect.value === "custom") { p.set("start", start); p.set("end", end); }
      navigate(`#/search?${p}`, true);
    }
    running?.abort();
    const controller = new AbortController();
    running = controller;
    editor.clearError();
    for (const key of ["renderedMs", "firstResultsMs"]) delete root.dataset[key];
    status.textContent = "Searching…";
    progress.show();
    const asked = performance.now();
    let streamed = new Map();
    let final = null;
    let frame = 0;
    const paintStreamed = () => {
      if (frame) return;
      frame = requestAnimationFrame(() => {
        frame = 0;
        if (final || controller.signal.aborted) return;
        lastTraces = [...streamed.values()];
        if (!lastTraces.length) return;
        renderResults(lastTraces);
        root.dataset.firstResultsMs ??= String(performance.now() - asked);
      });
    };
    try {
      await stream("/api/threadline/search/stream", { q, start, end, limit: limitSelect.value, spss: 3 }, (line) => {
        // The user went to another page: the rest of the answer is not wanted.
        if (!results.isConnected) { controller.abort(); return; }
        if (line.partial) {
          for (const t of line.partial.traces || []) if (!streamed.has(t.traceID)) streamed.set(t.traceID, summary(t));
          progress.update(line.partial.progress);
          paintStreamed();
        } else if (line.final) {
          final = line.final;
        } else if (line.error) {
          throw new ApiError(line.error.status, line.error.message, "/api/threadline/search/stream");
        }
      }, controller.signal);
      if (!final) throw new ApiError(0, "the store ended the search without its final answer; try again", "/api/threadline/search/stream");
    } catch (err) {
      if (controller.signal.aborted) return;
      progress.fail();
      status.textContent = "";
      clear(results);
      if (err instanceof ApiError && err.status === 400) { editor.showError(err.message); return; }
      results.append(state("The search failed.", err.message, "error"));
      return;
    }
    if (controller.signal.aborted || !results.isConnected) return;
    const answered = performance.now();
    lastTraces = (final.traces || []).map(summary);
    renderResults(lastTraces);
    progress.done(final.metrics);
    requestAnimationFrame(() => {
      root.dataset.renderedMs = String(performance.now() - answered);
      if (lastTraces.length) root.dataset.firstResultsMs ??= String(performance.now() - asked);
      status.textContent = `${lastTraces.length} traces · ${final.metrics?.inspectedTraces ?? "?"} inspected · ${Math.round(answered - asked)} ms`;
    });
    clear(insightBox).append(insightPanel({ query: q, bounds, traces: lastTraces, onAdd: (filter) => {
      editor.value = combine(editor.value, filter);
      run(true);
    } }));
  }

  function renderResults(traces) {
    clear(results);
    if (!traces.length) {
      results.append(state("No traces match in this time range.", EMPTY_HINT));
      return;
    }
    results.append(scatter(traces, (id) => navigate(`#/trace/${id}`)), table(traces, navigate, sort));
  }

  run(false);
  editor.textarea.focus();
}

/// The query with one more spanset ANDed in (`{ }` alone is replaced).
export function combine(query, filter) {
  const q = query.trim();
  if (!q || /^\{\s*\}$/.test(q)) return filter;
  return `${q} && ${filter}`;
}

function summary(t) {
  const stats = t.serviceStats || {};
  const services = Object.keys(stats).filter(Boolean);
  return {
    id: t.traceID,
    startMs: Number(BigInt(t.startTimeUnixNano || "0") / 1000000n),
    durationMs: Number(t.durationMs || 0),
    rootService: t.rootServiceName,
    rootName: t.rootTraceName || "",
    spans: Object.values(stats).reduce((n, s) => n + (s.spanCount || 0), 0),
    errors: Object.values(stats).reduce((n, s) => n + (s.errorCount || 0), 0),
    services,
  };
}

function scatter(traces, open) {
  const W = 1200, H = 200, L = 60, B = 24, T = 8;
  const xs = traces.map((t) => t.startMs), ys = traces.map((t) => t.durationMs);
  let x0 = Math.min(...xs), x1 = Math.max(...xs);
  if (x1 - x0 < 1000) { x0 -= 500; x1 += 500; }
  const step = niceStep(Math.max(1, ...ys) / 4);
  const y1 = Math.ceil((Math.max(1, ...ys) * 1.05) / step) * step;
  const x = (v) => L + ((v - x0) / (x1 - x0)) * (W - L - 10);
  const y = (v) => H - B - (v / y1) * (H - B - T);
  const svg = h("svg", { class: "scatter", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Trace duration over time; red points have errors", style: { width: "100%", height: "200px" } });
  const axis = h("g", { class: "axis" }, h("line", { x1: L, y1: H - B, x2: W - 10, y2: H - B }), h("line", { x1: L, y1: T, x2: L, y2: H - B }));
  for (let v = 0; v <= y1 + step / 2; v += step) {
    axis.append(h("line", { class: "gridline", x1: L, y1: y(v), x2: W - 10, y2: y(v) }));
    axis.append(h("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, v === 0 ? "0" : duration(v * 1e6)));
  }
  for (let i = 0; i <= 4; i++) {
    const tv = x0 + ((x1 - x0) / 4) * i;
    axis.append(h("text", { x: x(tv), y: H - 6, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" }, time(tv)));
  }
  svg.append(axis);
  for (const t of traces) {
    const c = h("circle", { cx: x(t.startMs), cy: y(t.durationMs), r: 4.5, class: t.errors ? "err" : "", tabindex: 0, "data-trace": t.id,
      onclick: () => open(t.id), onkeydown: (e) => { if (e.key === "Enter") open(t.id); } },
      h("title", {}, `${t.rootService}: ${t.rootName} — ${duration(t.durationMs * 1e6)}${t.errors ? `, ${t.errors} error span(s)` : ""}`));
    svg.append(c);
  }
  return h("div", { class: "panel" }, h("div", { class: "legend" }, h("span", {}, h("span", { class: "swatch", style: { background: "var(--accent)" } }), "trace"), h("span", {}, h("span", { class: "swatch", style: { background: "var(--error)" } }), "trace with errors")), svg);
}

const COLUMNS = [
  ["startMs", "Start", (t) => time(t.startMs)],
  ["rootService", "Root service", (t) => h("span", {}, h("span", { class: "swatch", style: { background: serviceColour(t.rootService) } }), t.rootService)],
  ["rootName", "Root span", (t) => t.rootName],
  ["durationMs", "Duration", (t) => duration(t.durationMs * 1e6), "num"],
  ["spans", "Spans", (t) => t.spans, "num"],
  ["errors", "Errors", (t) => (t.errors ? h("span", { class: "errcount" }, t.errors) : "0"), "num"],
  ["services", "Services", (t) => t.services.map((s) => h("span", { class: "chip" }, s))],
];

/// The table; `sort` ({key, desc}) is kept by the page, so results repainted as they stream in
/// keep the order the user chose.
function table(traces, navigate, sort) {
  const body = h("tbody");
  const head = h("tr");
  const paint = () => {
    const { key: sortKey, desc } = sort;
    const sorted = [...traces].sort((a, b) => {
      const va = Array.isArray(a[sortKey]) ? a[sortKey].length : a[sortKey], vb = Array.isArray(b[sortKey]) ? b[sortKey].length : b[sortKey];
      return (va < vb ? -1 : va > vb ? 1 : 0) * (desc ? -1 : 1);
    });
    clear(body).append(...sorted.map((t) => h("tr", { "data-trace": t.id },
      ...COLUMNS.map(([key, , cell, cls], i) => h("td", { class: cls || "" }, i === 0 ? h("a", { href: `#/trace/${t.id}` }, cell(t)) : cell(t))),
      h("td", {}, h("a", { href: `#/compare?a=${t.id}`, title: "Compare this trace with another" }, "compare")))));
    clear(head).append(...COLUMNS.map(([key, label, , cls]) => h("th", { class: cls || "", "aria-sort": key === sortKey ? (desc ? "descending" : "ascending") : "none" },
      h("button", { onclick: () => { sort.desc = key === sortKey ? !desc : true; sort.key = key; paint(); } }, label, key === sortKey ? (desc ? " ▼" : " ▲") : ""))), h("th", {}, ""));
  };
  paint();
  return h("div", { class: "panel table-box" }, h("table", { class: "grid", id: "results" }, h("thead", {}, head), body));
}

/// "Searched N of M blocks" while the search streams; `data-state` is running, done or failed and
/// `data-partials` counts the partial answers received (the UI tests read both).
function searchProgress() {
  const bar = h("progress", { max: 1, value: 0, "aria-label": "Blocks searched" });
  const label = h("span", {});
  const el = h("span", { class: "search-progress", id: "search-progress", hidden: true, "aria-live": "polite" }, bar, label);
  let partials = 0;
  const set = (searched, total) => {
    bar.max = Math.max(1, total);
    bar.value = Math.min(searched, total);
    label.textContent = total ? `searched ${searched} of ${total} block${total === 1 ? "" : "s"}` : "searched the recent traces (no blocks yet)";
  };
  return {
    el,
    show() { partials = 0; el.hidden = false; el.dataset.state = "running"; el.dataset.partials = "0"; bar.removeAttribute("value"); label.textContent = "searching…"; },
    update(p = {}) { el.dataset.partials = String(++partials); set(p.searchedBlocks ?? 0, p.totalBlocks ?? 0); },
    done(metrics = {}) { const total = Number(metrics.totalBlocks ?? 0); set(total, total); bar.value = bar.max; el.dataset.state = "done"; },
    fail() { el.dataset.state = "failed"; el.hidden = true; },
  };
}

/// A round axis step (1, 2 or 5 × a power of ten) near `raw`, in ms.
function niceStep(raw) {
  const power = 10 ** Math.floor(Math.log10(raw));
  const m = raw / power;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * power;
}

function toUnix(local) { return Math.floor(new Date(local).getTime() / 1000); }
function toLocal(unix) {
  const d = new Date(Number(unix) * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export { parseDuration };
