// UI settings, kept in this browser (localStorage): the trace-to-logs URL template and the tenant.
const KEY = "threadline.settings";
const DEFAULTS = { logsUrl: "", tenant: "" };

export function settings() {
  try {
    return { ...DEFAULTS, ...JSON.parse(localStorage.getItem(KEY) || "{}") };
  } catch {
    return { ...DEFAULTS };
  }
}

export function saveSettings(values) {
  localStorage.setItem(KEY, JSON.stringify({ ...settings(), ...values }));
}

/// The logs URL of a span from the template: ${traceId} ${spanId} ${service} ${start} ${end}
/// (unix milliseconds, the span's start and end widened by a minute each way), URL-encoded.
export function logsUrl(template, span) {
  if (!template) return null;
  const values = {
    traceId: span.traceId,
    spanId: span.spanId,
    service: span.service,
    start: String(Math.floor(span.startNs / 1e6) - 60000),
    end: String(Math.ceil(span.endNs / 1e6) + 60000),
  };
  return template.replace(/\$\{(traceId|spanId|service|start|end)\}/g, (_, k) => encodeURIComponent(values[k]));
}
