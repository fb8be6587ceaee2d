// Span detail: attributes, resource, scope, events at their offsets (exception stack traces),
// links that open the linked trace, status message, and the span's logs (URL template).
import { h } from "./dom.js";
import { duration } from "./format.js";
import { settings, logsUrl } from "./settings.js";

function kvTable(list, id) {
  if (!list.length) return h("p", { class: "muted" }, "none");
  return h("table", { id }, h("tbody", {}, ...list.map(([k, v]) => h("tr", { "data-key": k }, h("td", { class: "mono" }, k), h("td", { class: "mono" }, v)))));
}

export function spanDetail(span, trace, close) {
  const offset = (ns) => duration(ns - trace.startNs);
  const template = settings().logsUrl;
  const logs = logsUrl(template, { traceId: trace.id, spanId: span.spanId, service: span.service, startNs: span.startNs, endNs: span.endNs });
  return h("div", {},
    h("div", { class: "row" }, h("h2", { class: "grow" }, span.name), h("button", { onclick: close, "aria-label": "Close span detail" }, "×")),
    h("table", {}, h("tbody", {},
      h("tr", {}, h("td", {}, "Service"), h("td", {}, span.service)),
      h("tr", {}, h("td", {}, "Duration"), h("td", {}, duration(span.endNs - span.startNs))),
      h("tr", {}, h("td", {}, "Starts at"), h("td", {}, `${offset(span.startNs)} into the trace`)),
      h("tr", {}, h("td", {}, "Kind"), h("td", {}, span.kind)),
      h("tr", {}, h("td", {}, "Status"), h("td", { class: span.error ? "status-error" : "", id: "span-status" },
        span.error ? "error" : span.statusCode === 1 || span.statusCode === "STATUS_CODE_OK" ? "ok" : "unset",
        span.statusMessage ? `: ${span.statusMessage}` : "")),
      h("tr", {}, h("td", {}, "Span id"), h("td", { class: "mono" }, span.spanId)),
      h("tr", {}, h("td", {}, "Critical path"), h("td", {}, span.critical.length ? duration(span.critical.reduce((n, c) => n + c.end - c.start, 0)) + " of this span" : "not on it")))),
    h("div", { class: "row", style: { margin: "8px 0" } },
      logs ? h("a", { href: logs, target: "_blank", rel: "noopener", id: "logs-link" }, "Logs for this span ↗")
        : h("span", { class: "muted" }, "Logs: set a URL template in ", h("a", { href: "#/settings" }, "Settings"), ".")),
    h("h2", {}, "Attributes"), kvTable(span.attributes, "span-attributes"),
    h("h2", {}, "Events"), span.events.length ? h("ul", { id: "span-events" }, ...span.events.map((e) => {
      const stack = e.attributes.find(([k]) => k === "exception.stacktrace");
      const rest = e.attributes.filter(([k]) => k !== "exception.stacktrace");
      return h("li", {}, h("strong", {}, e.name), h("span", { class: "muted" }, ` at ${offset(e.timeNs)} (${duration(e.timeNs - span.startNs)} into the span)`),
        kvTable(rest), stack ? h("pre", { class: "stacktrace" }, stack[1]) : null);
    })) : h("p", { class: "muted" }, "none"),
    h("h2", {}, "Links"), span.links.length ? h("ul", { id: "span-links" }, ...span.links.map((l) => h("li", {},
      h("a", { href: `#/trace/${l.traceId}?span=${l.spanId}` }, `trace ${l.traceId.slice(0, 16)}…, span ${l.spanId}`), kvTable(l.attributes)))) : h("p", { class: "muted" }, "none"),
    h("h2", {}, "Resource"), kvTable(span.resource, "span-resource"),
    h("h2", {}, "Scope"), h("p", { class: "mono" }, span.scope.name || "(unnamed)", span.scope.version ? ` ${span.scope.version}` : ""), span.scope.attributes.length ? kvTable(span.scope.attributes) : null,
  );
}
