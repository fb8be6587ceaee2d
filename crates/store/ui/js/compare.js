// Compare two traces (Jaeger's trace diff): spans matched by their service/name path from the
// root (the n-th span of a path in A with the n-th in B), shown as only-in-A, only-in-B, slower,
// faster or same (within 10% and 1 ms).
import { h, clear, state } from "./dom.js";
import { get } from "./api.js";
import { buildTrace } from "./trace_model.js";
import { duration } from "./format.js";

function paths(trace) {
  const out = new Map();
  const stack = [...trace.roots].reverse().map((s) => [s, ""]);
  while (stack.length) {
    const [s, prefix] = stack.pop();
    const path = `${prefix}${prefix ? " › " : ""}${s.service}: ${s.name}`;
    if (!out.has(path)) out.set(path, []);
    out.get(path).push(s);
    for (let i = s.children.length - 1; i >= 0; i--) stack.push([s.children[i], path]);
  }
  return out;
}

export function diff(a, b) {
  const pa = paths(a), pb = paths(b);
  const keys = [...new Set([...pa.keys(), ...pb.keys()])];
  const rows = [];
  for (const path of keys) {
    const la = pa.get(path) || [], lb = pb.get(path) || [];
    for (let i = 0; i < Math.max(la.length, lb.length); i++) {
      const sa = la[i], sb = lb[i];
      const da = sa ? sa.endNs - sa.startNs : null, db = sb ? sb.endNs - sb.startNs : null;
      let kind = "same";
      if (!sb) kind = "only-a";
      else if (!sa) kind = "only-b";
      else if (db - da > Math.max(1e6, da * 0.1)) kind = "slower";
      else if (da - db > Math.max(1e6, da * 0.1)) kind = "faster";
      rows.push({ path, depth: path.split(" › ").length - 1, kind, da, db });
    }
  }
  return rows;
}

const LABEL = { "only-a": "only in A", "only-b": "only in B", slower: "slower in B", faster: "faster in B", same: "same" };

export async function comparePage(root, params, navigate) {
  const a = h("input", { id: "cmp-a", value: params.get("a") || "", placeholder: "trace id A", size: 34, "aria-label": "Trace A" });
  const b = h("input", { id: "cmp-b", value: params.get("b") || "", placeholder: "trace id B", size: 34, "aria-label": "Trace B" });
  const out = h("div", {});
  const go = () => navigate(`#/compare?a=${a.value.trim()}&b=${b.value.trim()}`);
  clear(root).append(h("h1", {}, "Compare two traces"),
    h("div", { class: "row" }, "A", a, "B", b, h("button", { class: "primary", id: "cmp-run", onclick: go }, "Compare")), out);
  for (const el of [a, b]) el.addEventListener("keydown", (e) => { if (e.key === "Enter") go(); });
  if (!a.value || !b.value) { out.append(state("Give two trace ids.", "Open a trace and use \"Compare with…\", or pick two from the search results (\"compare\" in each row fills A).")); (a.value ? b : a).focus(); return; }
  out.append(h("p", { class: "muted" }, "Loading both traces…"));
  let ta, tb;
  try {
    [ta, tb] = await Promise.all([get(`/api/traces/${a.value.trim()}`), get(`/api/traces/${b.value.trim()}`)]).then((x) => x.map(buildTrace));
  } catch (err) { clear(out).append(state("Could not load both traces.", err.message, "error")); return; }
  const rows = diff(ta, tb);
  const count = (k) => rows.filter((r) => r.kind === k).length;
  clear(out).append(
    h("p", {}, `A: ${ta.spans.length} spans, ${duration(ta.endNs - ta.startNs)} · B: ${tb.spans.length} spans, ${duration(tb.endNs - tb.startNs)}`),
    h("p", { id: "cmp-summary" }, ...["only-a", "only-b", "slower", "faster"].map((k) => h("span", { class: `chip cmp-${k}` }, `${count(k)} ${LABEL[k]}`))),
    h("table", { class: "grid", id: "cmp-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "Span (service: name)"), h("th", {}, "Change"), h("th", { class: "num" }, "A"), h("th", { class: "num" }, "B"), h("th", { class: "num" }, "B − A"))),
      h("tbody", {}, ...rows.map((r) => h("tr", { class: `cmp-${r.kind}`, "data-kind": r.kind },
        h("td", { style: { paddingLeft: `${8 + r.depth * 14}px` } }, r.path.split(" › ").pop()),
        h("td", {}, LABEL[r.kind]),
        h("td", { class: "num" }, r.da === null ? "—" : duration(r.da)),
        h("td", { class: "num" }, r.db === null ? "—" : duration(r.db)),
        h("td", { class: "num" }, r.da === null || r.db === null ? "" : `${r.db >= r.da ? "+" : "−"}${duration(Math.abs(r.db - r.da))}`))))));
}
