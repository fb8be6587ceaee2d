// The trace view: header, minimap, time ruler, a virtualised waterfall (only the rows in view are
// in the DOM, so 10,000 spans scroll smoothly), the critical path, find-in-trace, span detail,
// keyboard navigation and download as OTLP JSON.
import { h, clear, state } from "./dom.js";
import { get, ApiError } from "./api.js";
import { buildTrace, visibleRows } from "./trace_model.js";
import { criticalPath } from "./critical_path.js";
import { duration, time, serviceColour } from "./format.js";
import { spanDetail } from "./span_detail.js";

const ROW = 24;
const OVERSCAN = 10;

export async function tracePage(root, id, params, navigate) {
  clear(root).append(h("p", { class: "muted" }, `Loading trace ${id}…`));
  const asked = performance.now();
  let body;
  try {
    body = await get(`/api/traces/${encodeURIComponent(id)}`);
  } catch (err) {
    clear(root).append(h("h1", {}, `Trace ${id}`), err instanceof ApiError && err.status === 404
      ? state("This trace is not in the store (yet).", "A trace is written once the gateway decides on it (decision_wait, 10 s in all-in-one); it may also have been sampled out or expired by retention. Try again in a few seconds, or search for it.")
      : state("Could not load the trace.", err.message, "error"));
    return;
  }
  const trace = buildTrace(body);
  if (!trace.spans.length) { clear(root).append(h("h1", {}, `Trace ${id}`), state("This trace has no spans.", "")); return; }
  const sections = criticalPath(trace);
  for (const [span, list] of sections) span.critical = list;
  render(root, trace, params, navigate, body);
  requestAnimationFrame(() => { root.dataset.interactiveMs = String(performance.now() - asked); });
}

function render(root, trace, params, navigate, body) {
  const total = Math.max(1, trace.endNs - trace.startNs);
  const services = [...new Set(trace.spans.map((s) => s.service))];
  const errors = trace.spans.filter((s) => s.error).length;
  const rootSpan = trace.roots[0];
  let rows = visibleRows(trace);
  let selected = params.get("span") ? trace.byId.get(params.get("span")) : null;
  let matches = new Set();
  let matchList = [];
  let matchAt = -1;

  const inner = h("div", { class: "wf-inner" });
  const viewport = h("div", { class: "waterfall", id: "waterfall", tabindex: 0, role: "tree", "aria-label": "Span waterfall: arrows move, left/right collapse and expand, Enter shows the span" }, inner);
  const minimap = h("canvas", { class: "minimap", id: "minimap", height: 40, "aria-label": "Minimap: click to scroll", role: "img" });
  const ruler = h("div", { class: "ruler", "aria-hidden": "true" });
  const detailBox = h("aside", { class: "detail", id: "span-detail", "aria-label": "Span detail", hidden: true });
  const layout = h("div", { class: "trace-layout" }, h("div", {}, ruler, viewport), detailBox);
  const findInput = h("input", { type: "search", id: "find", placeholder: "Find in trace (name, service, attribute)", "aria-label": "Find in trace", size: 34 });
  const findCount = h("span", { class: "muted", "aria-live": "polite" });

  for (let i = 0; i <= 5; i++) ruler.append(h("span", { style: { left: `${i * 20}%` } }, duration((total / 5) * i)));

  const download = () => {
    const blob = new Blob([JSON.stringify({ resourceSpans: trace.batches }, null, 1)], { type: "application/json" });
    const a = h("a", { href: URL.createObjectURL(blob), download: `trace-${trace.id}.json` });
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  };

  clear(root).append(
    h("div", { class: "trace-head" },
      h("h1", {}, h("span", { class: "wf-svc" }, rootSpan.service), rootSpan.name),
      h("span", { class: "mono muted", id: "trace-id" }, trace.id),
      h("span", {}, `${duration(total)} · `, h("span", { id: "span-count" }, trace.spans.length), " spans · ",
        h("span", { class: errors ? "errcount" : "", id: "error-count" }, errors), " errors · ", time(trace.startNs / 1e6))),
    h("div", { class: "row", style: { margin: "6px 0" } },
      findInput, findCount,
      h("button", { onclick: () => setAll(false) }, "Expand all"), h("button", { onclick: () => setAll(true) }, "Collapse all"),
      h("button", { id: "download", onclick: download }, "Download OTLP JSON"),
      h("a", { href: `#/compare?a=${trace.id}` }, "Compare with…"),
      h("span", { class: "grow" }),
      h("span", { class: "legend" }, ...services.map((s) => h("span", {}, h("span", { class: "swatch", style: { background: serviceColour(s) } }), s)),
        h("span", {}, h("span", { class: "swatch", style: { background: "var(--critical)", height: "4px" } }), "critical path"))),
    minimap, layout,
  );

  const pct = (ns) => ((ns - trace.startNs) / total) * 100;

  function rowEl(span, index) {
    const el = h("div", {
      class: `wf-row${span === selected ? " selected" : ""}${matches.has(span) ? " match" : ""}`,
      style: { top: `${index * ROW}px` }, role: "treeitem", "aria-level": span.depth + 1, "aria-selected": String(span === selected),
      "aria-expanded": span.children.length ? String(!span.collapsed) : undefined,
      "data-span": span.spanId, "data-error": span.error ? "true" : undefined, "data-critical": span.critical.length ? "true" : undefined,
      onclick: (e) => { if (e.target.classList.contains("wf-toggle")) toggle(span); else select(span); },
    },
    h("div", { class: "wf-label", style: { paddingLeft: `${span.depth * 14}px` }, title: `${span.service}: ${span.name}` },
      h("span", { class: "wf-toggle" }, span.children.length ? (span.collapsed ? "▸" : "▾") : ""),
      span.error ? h("span", { class: "wf-err", title: "error" }, "!") : null,
      h("span", { class: "wf-svc", style: { color: serviceColour(span.service) } }, span.service),
      h("span", { class: "wf-name", title: span.name }, span.name),
      span.collapsed ? h("span", { class: "muted" }, ` (+${countBelow(span)})`) : null),
    h("div", { class: "wf-track" },
      h("div", { class: `wf-bar${span.error ? " error" : ""}`, style: { left: `${pct(span.startNs)}%`, width: `${Math.max(0.1, pct(span.endNs) - pct(span.startNs))}%`, background: serviceColour(span.service) } }),
      ...span.critical.map((c) => h("div", { class: "wf-crit", style: { left: `${pct(c.start)}%`, width: `${Math.max(0.05, pct(c.end) - pct(c.start))}%` } })),
      durationLabel(span)));
    return el;
  }

  // The duration label stays inside the track, so it never covers the span's name: right of the
  // bar when there is room, else left of it, else inside the bar's right end.
  let trackPx = 0;
  function durationLabel(span) {
    const text = duration(span.endNs - span.startNs);
    const need = (text.length * 6.5 + 8) / Math.max(1, trackPx) * 100;
    const [start, end] = [pct(span.startNs), pct(span.endNs)];
    if (100 - end >= need) return h("span", { class: "wf-dur", style: { left: `calc(${end}% + 4px)` } }, text);
    if (start >= need) return h("span", { class: "wf-dur", style: { right: `calc(${100 - start}% + 4px)` } }, text);
    return h("span", { class: "wf-dur inside", style: { right: `calc(${100 - end}% + 3px)` } }, text);
  }

  let painted = "";
  function paint(force = false) {
    inner.style.height = `${rows.length * ROW}px`;
    const first = Math.max(0, Math.floor(viewport.scrollTop / ROW) - OVERSCAN);
    const last = Math.min(rows.length, Math.ceil((viewport.scrollTop + viewport.clientHeight) / ROW) + OVERSCAN);
    const key = `${first}:${last}`;
    if (!force && key === painted) return;
    painted = key;
    trackPx = Math.max(1, inner.clientWidth - labelPx() - 8);
    const frag = document.createDocumentFragment();
    for (let i = first; i < last; i++) frag.append(rowEl(rows[i], i));
    clear(inner).append(frag);
    // The ruler sits above the rows' tracks: end it where they end (scrollbar, border, margin).
    ruler.style.marginRight = `${viewport.offsetWidth - viewport.clientWidth - 1 + 8}px`;
    paintMinimap();
  }

  function labelPx() {
    return parseFloat(getComputedStyle(document.documentElement).getPropertyValue("--label-w")) || 360;
  }

  function paintMinimap() {
    const width = minimap.clientWidth || 1000;
    if (minimap.width !== width) minimap.width = width;
    const ctx = minimap.getContext("2d");
    ctx.clearRect(0, 0, width, 40);
    const n = rows.length;
    const step = Math.max(1, Math.ceil(n / 40));
    for (let i = 0; i < n; i += step) {
      const s = rows[i];
      ctx.fillStyle = s.error ? "#d32f2f" : serviceColour(s.service);
      const x = (pct(s.startNs) / 100) * width;
      ctx.fillRect(x, (i / n) * 38, Math.max(1, ((s.endNs - s.startNs) / total) * width), Math.max(1, 38 / Math.min(n, 40)));
    }
    const top = (viewport.scrollTop / Math.max(1, n * ROW)) * 40;
    const height = Math.max(3, (viewport.clientHeight / Math.max(1, n * ROW)) * 40);
    ctx.strokeStyle = getComputedStyle(document.documentElement).getPropertyValue("--accent") || "#2457c5";
    ctx.lineWidth = 2;
    ctx.strokeRect(1, top, width - 2, Math.min(height, 39 - top));
  }
  minimap.addEventListener("click", (e) => {
    const ratio = e.offsetY / minimap.clientHeight;
    viewport.scrollTop = ratio * rows.length * ROW - viewport.clientHeight / 2;
  });

  let ticking = false;
  viewport.addEventListener("scroll", () => {
    if (ticking) return;
    ticking = true;
    requestAnimationFrame(() => { ticking = false; paint(); });
  });
  window.addEventListener("resize", () => paint(true));

  function relayout() { rows = visibleRows(trace); paint(true); }
  function toggle(span) { if (span.children.length) { span.collapsed = !span.collapsed; relayout(); } }
  function setAll(collapsed) {
    for (const s of trace.spans) s.collapsed = collapsed && s.children.length > 0 && s.depth >= 1;
    relayout();
  }
  function countBelow(span) {
    let n = 0;
    const st = [...span.children];
    while (st.length) { const s = st.pop(); n++; st.push(...s.children); }
    return n;
  }
  function reveal(span) {
    for (let p = span.parent; p; p = p.parent) p.collapsed = false;
    rows = visibleRows(trace);
    const i = rows.indexOf(span);
    if (i * ROW < viewport.scrollTop || (i + 1) * ROW > viewport.scrollTop + viewport.clientHeight) viewport.scrollTop = i * ROW - viewport.clientHeight / 3;
    paint(true);
  }
  function select(span, scroll = false) {
    selected = span;
    if (scroll) reveal(span); else paint(true);
    layout.classList.add("with-detail");
    detailBox.hidden = false;
    clear(detailBox).append(spanDetail(span, trace, () => { selected = null; detailBox.hidden = true; layout.classList.remove("with-detail"); paint(true); viewport.focus(); }));
    const p = new URLSearchParams(location.hash.split("?")[1] || "");
    p.set("span", span.spanId);
    navigate(`#/trace/${trace.id}?${p}`, true, true);
  }

  viewport.addEventListener("keydown", (e) => {
    const i = selected ? rows.indexOf(selected) : -1;
    if (e.key === "ArrowDown" || e.key === "j") { e.preventDefault(); select(rows[Math.min(rows.length - 1, i + 1)], true); }
    else if (e.key === "ArrowUp" || e.key === "k") { e.preventDefault(); select(rows[Math.max(0, i - 1)], true); }
    else if (e.key === "ArrowLeft" && selected) { e.preventDefault(); if (!selected.collapsed && selected.children.length) toggle(selected); else if (selected.parent) select(selected.parent, true); }
    else if (e.key === "ArrowRight" && selected) { e.preventDefault(); if (selected.collapsed) toggle(selected); }
    else if (e.key === "Home") { e.preventDefault(); select(rows[0], true); }
    else if (e.key === "End") { e.preventDefault(); select(rows[rows.length - 1], true); }
  });

  findInput.addEventListener("input", () => {
    const q = findInput.value.trim().toLowerCase();
    matches = new Set();
    if (q) for (const s of trace.spans) {
      if (s.name.toLowerCase().includes(q) || s.service.toLowerCase().includes(q) || s.spanId.toLowerCase() === q ||
        s.attributes.some(([k, v]) => k.toLowerCase().includes(q) || v.toLowerCase().includes(q))) matches.add(s);
    }
    matchList = trace.spans.filter((s) => matches.has(s)).sort((a, b) => a.startNs - b.startNs);
    matchAt = -1;
    findCount.textContent = q ? `${matches.size} match${matches.size === 1 ? "" : "es"} (Enter: next)` : "";
    paint(true);
  });
  findInput.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && matchList.length) { matchAt = (matchAt + (e.shiftKey ? -1 : 1) + matchList.length) % matchList.length; select(matchList[matchAt], true); }
  });

  paint(true);
  if (selected) select(selected, true);
}
