// The store's public HTTP API (Tempo's endpoints and Threadline's), with the tenant header and the
// credential when set.
import { settings, authorization } from "./settings.js";

export class ApiError extends Error {
  constructor(status, message, path) {
    super(message);
    this.status = status;
    this.path = path;
  }
}

async function request(path, params, signal) {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") query.set(k, v);
  const url = query.toString() ? `${path}?${query}` : path;
  const headers = {};
  const tenant = settings().tenant;
  if (tenant) headers["X-Scope-OrgID"] = tenant;
  const credential = authorization();
  if (credential) headers.Authorization = credential;
  let response;
  try {
    response = await fetch(url, { headers, signal });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, `the store at ${location.host} does not answer (${err.message}); is threadline running?`, path);
  }
  if (!response.ok) {
    const text = (await response.text()).trim() || response.statusText;
    if (response.status === 401) {
      const hint = credential ? "the credential in Settings was refused" : "set a token or a user in Settings (#/settings)";
      throw new ApiError(401, `the store requires a credential: ${hint} (${text})`, path);
    }
    throw new ApiError(response.status, text, path);
  }
  return response;
}

export async function get(path, params = {}) {
  const response = await request(path, params);
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(response.status, `not JSON from ${path}`, path);
  }
}

/// An NDJSON answer (e.g. /api/threadline/search/stream), calling `onLine` with each object as
/// it arrives; resolves when the answer ends. `signal` (an AbortSignal) cancels it.
export async function stream(path, params, onLine, signal) {
  const response = await request(path, params, signal);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let pending = "";
  const emit = (line) => {
    if (!line.trim()) return;
    let value;
    try { value = JSON.parse(line); } catch { throw new ApiError(response.status, `not JSON from ${path}: ${line.slice(0, 80)}`, path); }
    onLine(value);
  };
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    pending += decoder.decode(value, { stream: true });
    const lines = pending.split("\n");
    pending = lines.pop();
    for (const line of lines) emit(line);
  }
  emit(pending + decoder.decode());
}

/// A time range: `15m`, `1h`, `6h`, `24h`, or custom start/end (unix seconds).
export const RANGES = { "15m": 900, "1h": 3600, "6h": 21600, "24h": 86400 };
export function rangeSeconds(range, start, end) {
  if (range === "custom" && start && end) return { start: Number(start), end: Number(end) };
  const now = Math.ceil(Date.now() / 1000);
  return { start: now - (RANGES[range] || 3600), end: now };
}

/// `parse error at line L, column C: message` → {line, column, message}.
export function parseErrorPosition(message) {
  const m = String(message).match(/line (\d+), column (\d+): ?(.*)$/s);
  return m ? { line: Number(m[1]), column: Number(m[2]), message: m[3] } : null;
}
