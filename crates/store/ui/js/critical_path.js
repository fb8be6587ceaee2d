// The critical path as Jaeger computes it (jaeger-ui packages/jaeger-ui/src/components/TracePage/
// CriticalPath, read at c321fb32bbca0bdce9e8c2d40afb35abbf54c12b): from the root, take the child
// that finishes last, then walk back through the child that finishes last strictly before the
// previous one started; the parent's own time between those children is critical. Children are
// first trimmed to their parent's bounds, children starting after their parent ended are dropped,
// and a consumer under a producer is not blocking (OpenTelemetry's only such signal), so dropped.
// Returns Map<span, [{start, end}]> of critical sections (nanoseconds).
export function criticalPath(trace) {
  const sections = new Map();
  const add = (span, start, end) => {
    if (end <= start) return;
    if (!sections.has(span)) sections.set(span, []);
    sections.get(span).push({ start, end });
  };
  // Sanitised bounds, parent first.
  const bounds = new Map();
  const order = [];
  const stack = [...trace.roots];
  while (stack.length) {
    const s = stack.pop();
    order.push(s);
    for (const c of s.children) stack.push(c);
  }
  for (const s of order) {
    let start = s.startNs, end = s.endNs;
    const p = s.parent && bounds.get(s.parent);
    if (p) {
      const nonBlocking = s.kind === "consumer" && s.parent.kind === "producer";
      if (start >= p.end || nonBlocking) { bounds.set(s, null); continue; }
      start = Math.max(start, p.start);
      end = Math.min(end, p.end);
    } else if (s.parent && !bounds.get(s.parent)) { bounds.set(s, null); continue; }
    bounds.set(s, { start, end });
  }
  const children = (s) => s.children.filter((c) => bounds.get(c));
  // The root that ends last carries the path (one root in a whole trace).
  const root = trace.roots.filter((r) => bounds.get(r)).sort((a, b) => bounds.get(b).end - bounds.get(a).end)[0];
  if (!root) return sections;
  // Iterative form of Jaeger's recursion: (span, the point it must finish by).
  const work = [[root, bounds.get(root).end]];
  while (work.length) {
    const [span, until] = work.pop();
    const b = bounds.get(span);
    let cursor = until;
    const kids = children(span).sort((a, z) => bounds.get(z).end - bounds.get(a).end);
    const todo = [];
    let first = true;
    for (const child of kids) {
      const cb = bounds.get(child);
      // After the first, a child must end strictly before the previous critical child started.
      if (first ? cb.end > cursor : cb.end >= cursor) continue;
      first = false;
      add(span, cb.end, cursor);
      todo.push([child, cb.end]);
      cursor = cb.start;
      if (cursor <= b.start) break;
    }
    add(span, b.start, cursor);
    // Children are visited after their parent's own sections (order does not change the result).
    for (const t of todo) work.push(t);
  }
  return sections;
}
