// The health page: `threadline doctor`'s trace checks over a window (GET /api/threadline/doctor),
// grouped by severity, each finding with where it happens, how often, example traces and the fix.
import { h, clear, state } from "./dom.js";
import { get } from "./api.js";

const WINDOWS = ["15m", "1h", "6h", "24h"];
const SEVERITIES = ["critical", "warning", "info"];

function finding(f) {
  const where = [
    f.hop ? `${f.hop.from} → ${f.hop.to}` : (f.services || []).join(", "),
    f.attribute ? `attribute ${f.attribute}` : null,
  ].filter(Boolean).join(" · ");
  const share = f.total ? ` of ${f.total}` : "";
  return h("article", { class: `panel finding ${f.severity}`, "data-kind": f.kind },
    h("h3", {}, h("span", { class: `severity ${f.severity}` }, f.severity), " ", f.title),
    h("p", { class: "muted" }, where, where ? " · " : "", `${f.count}${share}`, " · ", f.category),
    f.detail ? h("p", {}, f.detail) : null,
    (f.examples || []).length ? h("p", {}, "Examples: ", ...(f.examples || []).slice(0, 5).flatMap((e, i) => [
      i ? ", " : "",
      h("a", { href: `#/trace/${e.trace_id}`, class: "example" }, e.trace_id.slice(0, 12)),
      e.linked_trace_id ? [" ↔ ", h("a", { href: `#/trace/${e.linked_trace_id}` }, e.linked_trace_id.slice(0, 12))] : null,
      e.note ? h("span", { class: "muted" }, ` (${e.note})`) : null,
    ])) : null,
    f.fix ? h("p", {}, h("strong", {}, "Fix: "), f.fix) : null,
    f.fix_config ? h("pre", { class: "fix" }, f.fix_config) : null);
}

export async function healthPage(root, params, navigate) {
  const since = WINDOWS.includes(params.get("since")) ? params.get("since") : "1h";
  const picker = h("select", { "aria-label": "Window", onchange: (e) => navigate(`#/health?since=${e.target.value}`) },
    ...WINDOWS.map((w) => h("option", { value: w, selected: w === since }, `Last ${w}`)));
  const body = h("div", { class: "health" }, h("p", { class: "muted" }, "Checking the stored traces…"));
  clear(root).append(h("div", { class: "row" }, h("h1", {}, "Health"), picker),
    h("p", { class: "muted" }, "Where tracing breaks: lost context, broken traces, span names that explode, PII in attributes (the trace checks of ",
      h("code", {}, "threadline doctor"), "; collector metrics and configs are checked by the CLI)."), body);
  let report;
  try {
    report = await get("/api/threadline/doctor", { since });
  } catch (err) {
    clear(body).append(state("The store did not answer the health check.", err.message, "error"));
    return;
  }
  const s = report.scanned || {};
  clear(body).append(h("p", { class: "scanned" },
    `Scanned ${s.traces ?? 0} traces, ${s.spans ?? 0} spans of ${s.services ?? 0} services in the last ${since}.`));
  if (!s.traces) {
    body.append(state("No traces in this window.", "Send traces, or choose a longer window."));
    return;
  }
  const findings = report.findings || [];
  if (!findings.length) {
    body.append(state("No findings.", "Context propagates, names are bounded, no PII seen in attributes."));
    return;
  }
  for (const severity of SEVERITIES) {
    const group = findings.filter((f) => f.severity === severity);
    if (group.length) body.append(h("h2", {}, `${severity} (${group.length})`), ...group.map(finding));
  }
  const other = findings.filter((f) => !SEVERITIES.includes(f.severity));
  if (other.length) body.append(h("h2", {}, "other"), ...other.map(finding));
}
