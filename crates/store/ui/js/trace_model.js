// A trace from Tempo's JSON (`{batches: [ResourceSpans]}` in OTLP JSON) into a span tree.
export function anyValue(v) {
  if (!v) return "";
  if ("stringValue" in v) return v.stringValue;
  if ("intValue" in v) return String(v.intValue);
  if ("doubleValue" in v) return String(v.doubleValue);
  if ("boolValue" in v) return String(v.boolValue);
  if ("bytesValue" in v) return v.bytesValue;
  if ("arrayValue" in v) return JSON.stringify((v.arrayValue.values || []).map(anyValue));
  if ("kvlistValue" in v) return JSON.stringify(Object.fromEntries((v.kvlistValue.values || []).map((kv) => [kv.key, anyValue(kv.value)])));
  return "";
}

const attrs = (list) => (list || []).map((kv) => [kv.key, anyValue(kv.value)]);
const KINDS = ["unspecified", "internal", "server", "client", "producer", "consumer"];
function kindName(k) {
  if (typeof k === "number") return KINDS[k] || "unspecified";
  return String(k || "").replace("SPAN_KIND_", "").toLowerCase() || "unspecified";
}
function isError(status) {
  const c = status?.code;
  return c === 2 || c === "STATUS_CODE_ERROR";
}

export function buildTrace(body) {
  const batches = body.batches || body.trace?.resourceSpans || body.resourceSpans || [];
  const spans = [];
  for (const batch of batches) {
    const resource = attrs(batch.resource?.attributes);
    const service = resource.find(([k]) => k === "service.name")?.[1] || "unknown service";
    for (const ss of batch.scopeSpans || batch.instrumentationLibrarySpans || []) {
      const scope = { name: ss.scope?.name || "", version: ss.scope?.version || "", attributes: attrs(ss.scope?.attributes) };
      for (const s of ss.spans || []) {
        const startNs = Number(s.startTimeUnixNano || 0), endNs = Number(s.endTimeUnixNano || 0);
        spans.push({
          traceId: s.traceId, spanId: s.spanId, parentId: s.parentSpanId || "", name: s.name || "", kind: kindName(s.kind),
          startNs, endNs: Math.max(endNs, startNs), service, resource, scope,
          attributes: attrs(s.attributes), error: isError(s.status), statusCode: s.status?.code ?? 0, statusMessage: s.status?.message || "",
          events: (s.events || []).map((e) => ({ name: e.name, timeNs: Number(e.timeUnixNano || 0), attributes: attrs(e.attributes) })),
          links: (s.links || []).map((l) => ({ traceId: l.traceId, spanId: l.spanId, attributes: attrs(l.attributes) })),
          children: [], depth: 0, collapsed: false, critical: [],
        });
      }
    }
  }
  const byId = new Map(spans.map((s) => [s.spanId, s]));
  const roots = [];
  for (const s of spans) {
    const parent = s.parentId && byId.get(s.parentId);
    if (parent && parent !== s) { parent.children.push(s); s.parent = parent; } else roots.push(s);
  }
  const byStart = (a, b) => a.startNs - b.startNs;
  roots.sort(byStart);
  // Depths and child order without recursion (deep traces).
  const stack = roots.map((r) => [r, 0]);
  while (stack.length) {
    const [s, d] = stack.pop();
    s.depth = d;
    s.children.sort(byStart);
    for (const c of s.children) stack.push([c, d + 1]);
  }
  const start = Math.min(...spans.map((s) => s.startNs));
  const end = Math.max(...spans.map((s) => s.endNs));
  return { id: spans[0]?.traceId || "", spans, roots, byId, startNs: start, endNs: end, batches };
}

/// The visible rows: a depth-first walk skipping the children of collapsed spans.
export function visibleRows(trace) {
  const rows = [];
  const stack = [...trace.roots].reverse();
  while (stack.length) {
    const s = stack.pop();
    rows.push(s);
    if (!s.collapsed) for (let i = s.children.length - 1; i >= 0; i--) stack.push(s.children[i]);
  }
  return rows;
}
