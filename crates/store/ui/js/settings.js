// UI settings, kept in this browser (localStorage): the trace-to-logs URL template and the tenant;
// and the credential for a store with `auth`, kept for this tab only (sessionStorage).
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

const CREDENTIAL_KEY = "threadline.credential";

/// The credential the store's `auth` asks for: {kind: "" | "bearer" | "basic", token, username,
/// password}. In sessionStorage: it goes when the tab closes and never sits in localStorage.
export function credential() {
  try {
    return { kind: "", token: "", username: "", password: "", ...JSON.parse(sessionStorage.getItem(CREDENTIAL_KEY) || "{}") };
  } catch {
    return { kind: "", token: "", username: "", password: "" };
  }
}

export function saveCredential(value) {
  if (!value.kind) sessionStorage.removeItem(CREDENTIAL_KEY);
  else sessionStorage.setItem(CREDENTIAL_KEY, JSON.stringify(value));
}

/// The Authorization header of the credential, or null.
export function authorization(c = credential()) {
  if (c.kind === "bearer" && c.token) return `Bearer ${c.token}`;
  if (c.kind === "basic" && c.username) {
    // btoa takes Latin-1: encode UTF-8 first, as curl and Grafana send it.
    const bytes = new TextEncoder().encode(`${c.username}:${c.password}`);
    return `Basic ${btoa(String.fromCharCode(...bytes))}`;
  }
  return null;
}
