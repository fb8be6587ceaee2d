// Durations, times and service colours.
export function duration(ns) {
  const n = Number(ns);
  if (!isFinite(n)) return "?";
  if (n < 1e3) return `${n.toFixed(0)} ns`;
  if (n < 1e6) return `${(n / 1e3).toFixed(n < 1e4 ? 1 : 0)} µs`;
  if (n < 1e9) return `${(n / 1e6).toFixed(n < 1e7 ? 2 : n < 1e8 ? 1 : 0)} ms`;
  if (n < 60e9) return `${(n / 1e9).toFixed(2)} s`;
  return `${Math.floor(n / 60e9)} m ${((n % 60e9) / 1e9).toFixed(0)} s`;
}

export function time(ms) {
  const d = new Date(ms);
  return d.toLocaleString(undefined, { hour12: false, month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export function clock(ms) {
  return new Date(ms).toLocaleTimeString(undefined, { hour12: false });
}

const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#ff9da7", "#86bcb6", "#8cd17d", "#d4a6c8", "#a0cbe8"];
const assigned = new Map();
export function serviceColour(name) {
  if (!assigned.has(name)) {
    let hash = 0;
    for (const c of name) hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
    // Prefer a free colour so the few services of a trace never share one.
    const used = new Set(assigned.values());
    let colour = PALETTE[hash % PALETTE.length];
    for (let i = 0; used.has(colour) && i < PALETTE.length; i++) colour = PALETTE[(hash + i) % PALETTE.length];
    assigned.set(name, colour);
  }
  return assigned.get(name);
}

/// `1500ms`, `2s`, `1m` → nanoseconds (TraceQL / Go durations); null when not a duration.
export function parseDuration(text) {
  const m = String(text).trim().match(/^(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h)$/);
  if (!m) return null;
  const unit = { ns: 1, us: 1e3, "µs": 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 }[m[2]];
  return Number(m[1]) * unit;
}

/// Nanoseconds → a TraceQL duration literal.
export function durationLiteral(ns) {
  if (ns >= 1e9 && ns % 1e8 === 0) return `${ns / 1e9}s`;
  if (ns >= 1e6) return `${Math.round(ns / 1e6)}ms`;
  if (ns >= 1e3) return `${Math.round(ns / 1e3)}us`;
  return `${Math.round(ns)}ns`;
}
