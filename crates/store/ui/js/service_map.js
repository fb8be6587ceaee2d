// The service map (GET /api/threadline/service-graph) and a service's page: rate, errors and
// duration percentiles over time (TraceQL metrics, /api/metrics/query_range) with its slowest
// and failing traces.
import { h, clear, state } from "./dom.js";
import { get, rangeSeconds, RANGES, ApiError } from "./api.js";
import { duration, time, serviceColour } from "./format.js";

const pct = (x) => `${(x * 100).toFixed(x < 0.1 && x > 0 ? 1 : 0)}%`;
const rate = (x) => `${x < 10 ? x.toFixed(2) : x.toFixed(0)}/s`;

function rangePicker(range, onChange) {
  return h("select", { "aria-label": "Time range", onchange: (e) => onChange(e.target.value) },
    ...Object.keys(RANGES).map((r) => h("option", { value: r, selected: r === range }, `Last ${r}`)));
}

/// Layers by longest distance from a node nobody calls; cycles are cut.
function layout(nodes, edges) {
  const incoming = new Map(nodes.map((n) => [n.id, 0]));
  for (const e of edges) incoming.set(e.target, (incoming.get(e.target) || 0) + 1);
  const layer = new Map();
  const queue = nodes.filter((n) => !incoming.get(n.id)).map((n) => n.id);
  if (!queue.length && nodes.length) queue.push(nodes[0].id);
  queue.forEach((id) => layer.set(id, 0));
  for (let guard = 0; queue.length && guard < 10000; guard++) {
    const id = queue.shift();
    for (const e of edges.filter((x) => x.source === id)) {
      const next = layer.get(id) + 1;
      if (!layer.has(e.target) || (layer.get(e.target) < next && next < nodes.length)) { layer.set(e.target, next); queue.push(e.target); }
    }
  }
  for (const n of nodes) if (!layer.has(n.id)) layer.set(n.id, 0);
  const columns = new Map();
  for (const n of nodes) { const l = layer.get(n.id); if (!columns.has(l)) columns.set(l, []); columns.get(l).push(n.id); }
  const pos = new Map();
  for (const [l, ids] of columns) ids.forEach((id, i) => pos.set(id, { x: 30 + l * 240, y: 30 + i * 110 }));
  const height = 60 + Math.max(...[...columns.values()].map((c) => c.length)) * 110;
  const width = 60 + (Math.max(...columns.keys()) + 1) * 240;
  return { pos, width, height };
}

export async function mapPage(root, params, navigate) {
  const range = params.get("range") || "1h";
  const out = h("div", { class: "map" });
  clear(root).append(h("div", { class: "row" }, h("h1", { class: "grow" }, "Service map"), rangePicker(range, (r) => navigate(`#/map?range=${r}`))), out);
  const { start, end } = rangeSeconds(range);
  let graph;
  try {
    graph = await get("/api/threadline/service-graph", { start, end });
  } catch (err) {
    out.append(err instanceof ApiError && err.status === 404
      ? state("This store does not serve the service graph.", "The service map is drawn from GET /api/threadline/service-graph (metrics from traces); upgrade the store to a version that has it. Search and traces work without it.")
      : state("Could not load the service graph.", err.message, "error"));
    out.dataset.state = "unavailable";
    return;
  }
  const nodes = graph.nodes || [], edges = graph.edges || [];
  if (!nodes.length) {
    out.append(state("No calls between services in this range.", "The map fills in as traces arrive (after the gateway's decision_wait, 10 s in all-in-one): run `threadline demo`, or widen the range."));
    return;
  }
  const { pos, width, height } = layout(nodes, edges);
  const W = 150, H = 62;
  const svg = h("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "Service map", style: { maxHeight: "460px" } },
    h("defs", {}, h("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, h("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "currentColor" }))));
  for (const e of edges) {
    const a = pos.get(e.source), b = pos.get(e.target);
    if (!a || !b) continue;
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2;
    const mx = (x1 + x2) / 2;
    svg.append(h("g", { class: `edge${e.errorRate > 0 ? " err" : ""}`, "data-source": e.source, "data-target": e.target },
      h("path", { d: `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`, "marker-end": "url(#arrow)" }),
      h("text", { x: mx, y: (y1 + y2) / 2 - 6, "text-anchor": "middle" }, `${rate(e.rate)} · ${pct(e.errorRate)} err`),
      h("text", { x: mx, y: (y1 + y2) / 2 + 8, "text-anchor": "middle" }, `p95 ${duration(e.p95Ms * 1e6)}`)));
  }
  for (const n of nodes) {
    const p = pos.get(n.id);
    const open = () => navigate(`#/service/${encodeURIComponent(n.id)}?range=${range}`);
    svg.append(h("g", { class: `node${n.errorRate > 0 ? " err" : ""}`, "data-node": n.id, tabindex: 0, role: "link", "aria-label": `${n.id}: ${rate(n.rate)}, ${pct(n.errorRate)} errors`, onclick: open, onkeydown: (e) => { if (e.key === "Enter") open(); } },
      h("rect", { x: p.x, y: p.y, width: W, height: H, rx: 8 }),
      h("rect", { x: p.x, y: p.y, width: 6, height: H, rx: 3, style: { fill: serviceColour(n.id), stroke: "none" } }),
      h("text", { class: "name", x: p.x + 14, y: p.y + 20 }, n.id),
      h("text", { x: p.x + 14, y: p.y + 36 }, `${n.kind || "service"} · ${rate(n.rate)}`),
      h("text", { x: p.x + 14, y: p.y + 52 }, `${pct(n.errorRate)} err · p95 ${duration(n.p95Ms * 1e6)}`)));
  }
  out.append(svg, h("h2", {}, "Calls"), h("table", { class: "grid", id: "edges" },
    h("thead", {}, h("tr", {}, ...["From", "To", "Type", "Rate", "Errors", "p50", "p95", "p99"].map((t, i) => h("th", { class: i > 2 ? "num" : "" }, t)))),
    h("tbody", {}, ...edges.map((e) => h("tr", {}, h("td", {}, e.source), h("td", {}, e.target), h("td", {}, e.connectionType || "request"),
      h("td", { class: "num" }, rate(e.rate)), h("td", { class: `num${e.errors ? " errcount" : ""}` }, `${e.errors} (${pct(e.errorRate)})`),
      ...[e.p50Ms, e.p95Ms, e.p99Ms].map((v) => h("td", { class: "num" }, duration(v * 1e6))))))));
}

function chart(title, series, format) {
  const W = 400, H = 140, L = 50, B = 18;
  const all = series.flatMap((s) => s.points);
  const box = h("div", { class: "chart panel" }, h("strong", {}, title));
  if (!all.length) { box.append(h("p", { class: "muted" }, "no data in this range")); return box; }
  const x0 = Math.min(...all.map((p) => p[0])), x1 = Math.max(...all.map((p) => p[0]), x0 + 1);
  const y1 = Math.max(...all.map((p) => p[1]), 1e-9) * 1.1;
  const x = (v) => L + ((v - x0) / (x1 - x0)) * (W - L - 6), y = (v) => H - B - (v / y1) * (H - B - 6);
  const svg = h("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title },
    h("text", { x: L - 4, y: 12, "text-anchor": "end" }, format(y1)), h("text", { x: L - 4, y: H - B, "text-anchor": "end" }, format(0)),
    h("text", { x: L, y: H - 4 }, time(x0)), h("text", { x: W - 6, y: H - 4, "text-anchor": "end" }, time(x1)));
  for (const s of series) svg.append(h("polyline", { points: s.points.map((p) => `${x(p[0])},${y(p[1])}`).join(" "), style: { stroke: s.colour } }));
  box.append(svg, h("div", { class: "legend" }, ...series.map((s) => h("span", {}, h("span", { class: "swatch", style: { background: s.colour } }), s.label))));
  return box;
}

function seriesOf(body, colour, labelOf) {
  return (body.series || []).map((s, i) => ({
    label: labelOf(s), colour: colour[i % colour.length],
    points: (s.samples || []).map((p) => [Number(p.timestampMs), Number(p.value)]).sort((a, b) => a[0] - b[0]),
  }));
}

export async function servicePage(root, name, params, navigate) {
  const range = params.get("range") || "1h";
  const { start, end } = rangeSeconds(range);
  const sel = `resource.service.name = ${JSON.stringify(name)}`;
  const charts = h("div", { class: "charts", id: "red" });
  const lists = h("div", { class: "results" });
  clear(root).append(h("div", { class: "row" }, h("h1", { class: "grow" }, h("span", { class: "swatch", style: { background: serviceColour(name) } }), name),
    rangePicker(range, (r) => navigate(`#/service/${encodeURIComponent(name)}?range=${r}`)), h("a", { href: `#/search?q=${encodeURIComponent(`{ ${sel} }`)}&range=${range}` }, "Search its traces")),
  charts, lists);
  const step = `${Math.max(15, Math.round((end - start) / 60))}s`;
  const metric = (q) => get("/api/metrics/query_range", { q, start, end, step });
  try {
    const [r, e, d] = await Promise.all([metric(`{ ${sel} } | rate()`), metric(`{ ${sel} && status = error } | rate()`), metric(`{ ${sel} } | quantile_over_time(duration, .5, .95, .99)`)]);
    const pLabel = (s) => { const l = (s.labels || []).find((x) => x.key === "p"); return l ? `p${Math.round(Number(Object.values(l.value)[0]) * 100)}` : "duration"; };
    charts.append(chart("Rate (spans/s)", seriesOf(r, ["#4e79a7"], () => "rate"), (v) => rate(v)),
      chart("Errors (spans/s)", seriesOf(e, ["#d32f2f"], () => "errors"), (v) => rate(v)),
      chart("Duration", seriesOf(d, ["#59a14f", "#f28e2b", "#b07aa1"], pLabel), (v) => duration(v * 1e9)));
  } catch (err) {
    charts.append(h("div", { style: { gridColumn: "1 / -1" } }, err instanceof ApiError && err.status === 404
      ? state("This store does not serve TraceQL metrics.", "Rate, errors and duration over time come from GET /api/metrics/query_range; the traces below work without it.")
      : state("Could not load the service's metrics.", err.message, "error")));
  }
  const list = async (title, q, sort) => {
    try {
      const body = await get("/api/search", { q, start, end, limit: 200 });
      const traces = (body.traces || []).sort(sort).slice(0, 10);
      lists.append(h("section", { class: "panel" }, h("h2", {}, title), traces.length ? h("table", { class: "grid" }, h("tbody", {}, ...traces.map((t) => h("tr", {},
        h("td", {}, h("a", { href: `#/trace/${t.traceID}` }, time(Number(BigInt(t.startTimeUnixNano) / 1000000n)))), h("td", {}, t.rootTraceName), h("td", { class: "num" }, duration(t.durationMs * 1e6)))))) : h("p", { class: "muted" }, "none in this range")));
    } catch (err) { lists.append(state(`Could not load ${title.toLowerCase()}.`, err.message, "error")); }
  };
  await list("Slowest traces", `{ ${sel} }`, (a, b) => b.durationMs - a.durationMs);
  await list("Failing traces", `{ ${sel} && status = error }`, (a, b) => Number(BigInt(b.startTimeUnixNano) - BigInt(a.startTimeUnixNano)));
}
