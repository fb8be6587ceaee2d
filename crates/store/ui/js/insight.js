// "What is different?": the error traces of the query, or its slow tail, against the rest of the
// window; attribute values ranked by over-representation (GET /api/threadline/what-is-different).
import { h, clear, state } from "./dom.js";
import { get } from "./api.js";
import { durationLiteral, parseDuration } from "./format.js";

export function insightPanel({ query, bounds, traces, onAdd }) {
  const sorted = traces.map((t) => t.durationMs).sort((a, b) => a - b);
  const p90 = sorted.length ? sorted[Math.floor(sorted.length * 0.9)] : 0;
  const mode = h("select", { id: "insight-mode", "aria-label": "Selection" },
    h("option", { value: "errors" }, "the error traces"), h("option", { value: "slow" }, "the traces slower than"));
  const threshold = h("input", { id: "insight-threshold", "aria-label": "Duration threshold", size: 8, value: durationLiteral(Math.max(1, p90) * 1e6), hidden: true });
  mode.addEventListener("change", () => { threshold.hidden = mode.value !== "slow"; });
  const out = h("div", { id: "insight-results" });
  const go = h("button", { id: "insight-run", onclick: run }, "What is different?");
  async function run() {
    const { start, end } = bounds();
    const base = /^\{\s*\}$/.test(query.trim()) ? "" : query;
    const params = { start, end, limit: 15 };
    if (base) params.base = base;
    if (mode.value === "errors") {
      params.q = "{ status = error }";
    } else {
      if (parseDuration(threshold.value) === null) { clear(out).append(state(`"${threshold.value}" is not a duration.`, "Write it as 500ms, 2s or 1m.", "error")); return; }
      params.minDuration = threshold.value.trim();
    }
    clear(out).append(h("p", { class: "muted" }, "Comparing…"));
    let body;
    try {
      body = await get("/api/threadline/what-is-different", params);
    } catch (err) {
      clear(out).append(state("Could not compare.", err.message, "error"));
      return;
    }
    clear(out);
    const sel = body.selection.traces, other = body.baseline.traces;
    if (!sel) { out.append(state("No trace of the window is in the selection.", mode.value === "errors" ? "No error traces here: widen the time range or change the query." : "Lower the threshold.")); return; }
    out.append(h("p", { class: "muted" }, `${sel} selected traces against ${other} others in the window.`));
    if (!body.attributes.length) { out.append(state("Nothing stands out.", "The selected traces hold the same attribute values as the others.")); return; }
    const pct = (x) => `${Math.round(x * 100)}%`;
    out.append(h("table", { class: "grid", id: "insight-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "Attribute"), h("th", {}, "Value"), h("th", { class: "num" }, "Selected"), h("th", { class: "num" }, "Others"), h("th", {}, "Share"), h("th", {}, ""))),
      h("tbody", {}, ...body.attributes.map((a) => h("tr", { "data-key": a.key, "data-value": a.value },
        h("td", { class: "mono" }, a.scope === "intrinsic" ? a.key : `${a.scope}.${a.key}`),
        h("td", { class: "mono" }, a.value),
        h("td", { class: "num" }, `${a.selection} (${pct(a.selectionShare)})`),
        h("td", { class: "num" }, `${a.baseline} (${pct(a.baselineShare)})`),
        h("td", {}, h("span", { class: "bar-share sel", style: { width: `${Math.round(a.selectionShare * 80)}px` }, title: "share of selected traces" }), " ",
          h("span", { class: "bar-share base", style: { width: `${Math.round(a.baselineShare * 80)}px` }, title: "share of other traces" })),
        h("td", {}, h("button", { onclick: () => onAdd(a.traceql), title: `Add ${a.traceql} to the query` }, "Add to query")))))));
  }
  return h("section", { class: "panel", "aria-labelledby": "insight-h", style: { marginTop: "12px" } },
    h("h2", { id: "insight-h" }, "What is different?"),
    h("div", { class: "row" }, "Compare", mode, threshold, "of this query with the rest of the window:", go), out);
}
