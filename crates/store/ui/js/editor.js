// The TraceQL editor: a textarea with completion of scopes, attribute names (from
// /api/v2/search/tags) and values (/api/v2/search/tag/{name}/values), both bounded to the search's
// time range, and parse errors shown at their line and column.
import { h, clear } from "./dom.js";
import { get, parseErrorPosition } from "./api.js";

const OPERATORS = ["=", "!=", ">", ">=", "<", "<=", "=~", "!~"];
const KEYWORDS = { status: ["error", "ok", "unset"], "span:status": ["error", "ok", "unset"], kind: ["server", "client", "producer", "consumer", "internal", "unspecified"], "span:kind": ["server", "client", "producer", "consumer", "internal", "unspecified"] };

export class TraceQlEditor {
  constructor({ value = "", onRun, range }) {
    this.onRun = onRun;
    this.range = range; // () => {start, end}
    this.tags = null;
    this.valueCache = new Map();
    this.items = [];
    this.active = 0;
    this.textarea = h("textarea", {
      id: "traceql", "aria-label": "TraceQL query", spellcheck: false, autocomplete: "off",
      "aria-autocomplete": "list", "aria-controls": "traceql-suggest", rows: 2,
      placeholder: '{ resource.service.name = "frontend" && status = error }  — Ctrl+Enter runs',
    });
    this.textarea.value = value;
    this.list = h("ul", { id: "traceql-suggest", class: "suggest", role: "listbox", hidden: true });
    this.error = h("div", { class: "parse-error", role: "alert", "aria-live": "polite" });
    this.el = h("div", { class: "editor" }, this.textarea, this.list, this.error);
    this.textarea.addEventListener("input", () => { this.clearError(); this.suggest(); });
    this.textarea.addEventListener("keydown", (e) => this.keydown(e));
    this.textarea.addEventListener("blur", () => setTimeout(() => this.close(), 150));
  }

  get value() { return this.textarea.value; }
  set value(v) { this.textarea.value = v; this.clearError(); }

  keydown(e) {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); this.close(); this.onRun?.(); return; }
    if (this.list.hidden) {
      if (e.key === " " && e.ctrlKey) { e.preventDefault(); this.suggest(true); }
      return;
    }
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      this.active = (this.active + (e.key === "ArrowDown" ? 1 : -1) + this.items.length) % this.items.length;
      this.paint();
    } else if (e.key === "Enter" || e.key === "Tab") {
      e.preventDefault();
      this.accept(this.items[this.active]);
    } else if (e.key === "Escape") {
      e.preventDefault();
      this.close();
    }
  }

  async loadTags() {
    if (this.tags) return this.tags;
    const { start, end } = this.range();
    try {
      const body = await get("/api/v2/search/tags", { start, end });
      const scopes = Object.fromEntries((body.scopes || []).map((s) => [s.name, s.tags || []]));
      this.tags = { span: scopes.span || [], resource: scopes.resource || [], intrinsic: scopes.intrinsic || [] };
    } catch {
      this.tags = { span: [], resource: [], intrinsic: [] };
    }
    return this.tags;
  }

  async loadValues(name) {
    if (KEYWORDS[name]) return KEYWORDS[name].map((v) => ({ value: v, type: "keyword" }));
    if (!this.valueCache.has(name)) {
      const { start, end } = this.range();
      this.valueCache.set(name, get(`/api/v2/search/tag/${encodeURIComponent(name)}/values`, { start, end })
        .then((b) => b.tagValues || []).catch(() => []));
    }
    return this.valueCache.get(name);
  }

  /// What is being typed at the cursor: an attribute name, or a value after `name op`.
  context() {
    const text = this.textarea.value.slice(0, this.textarea.selectionStart);
    const value = text.match(/([A-Za-z_.:][\w.:\-/]*)\s*(=|!=|>=|<=|=~|!~|>|<)\s*("?)([^"&|}]*)$/);
    if (value && !/\s$/.test(value[4])) {
      return { kind: "value", name: value[1], quoted: value[3] === '"', prefix: value[4], from: text.length - value[4].length - value[3].length };
    }
    const name = text.match(/(?:^|[{(&|!\s])([A-Za-z_.:][\w.:\-/]*)?$/);
    const inBraces = (text.match(/{/g) || []).length > (text.match(/}/g) || []).length;
    if (name && inBraces) {
      const prefix = name[1] || "";
      return { kind: "name", prefix, from: text.length - prefix.length };
    }
    return null;
  }

  async suggest(force = false) {
    const seq = (this.seq = (this.seq || 0) + 1);
    const ctx = this.context();
    if (!ctx || (!force && ctx.kind === "name" && ctx.prefix === "" && !/[{&|(]\s*$/.test(this.textarea.value.slice(0, this.textarea.selectionStart)))) return this.close();
    let items = [];
    if (ctx.kind === "name") {
      const tags = await this.loadTags();
      const p = ctx.prefix;
      const names = [
        ...["span.", "resource.", "."].map((s) => ({ label: s, insert: s, note: "scope", reopen: true })),
        ...tags.intrinsic.map((t) => ({ label: t, insert: `${t} `, note: "intrinsic" })),
        ...tags.span.map((t) => ({ label: `span.${t}`, insert: `span.${t} `, note: "span" })),
        ...tags.resource.map((t) => ({ label: `resource.${t}`, insert: `resource.${t} `, note: "resource" })),
      ];
      items = names.filter((n) => n.label.startsWith(p) && n.label !== p);
      if (p.startsWith(".")) {
        const all = [...new Set([...tags.span, ...tags.resource])];
        items = all.map((t) => ({ label: `.${t}`, insert: `.${t} `, note: "any scope" })).filter((n) => n.label.startsWith(p));
      }
    } else {
      const values = await this.loadValues(ctx.name);
      items = values.map((v) => {
        const type = v.type || "string";
        const insert = type === "string" ? JSON.stringify(v.value) : String(v.value);
        return { label: String(v.value), insert: `${insert} `, note: type };
      }).filter((v) => v.label.startsWith(ctx.prefix));
    }
    if (seq !== this.seq) return; // a later keystroke asked again
    this.ctx = ctx;
    this.items = items.slice(0, 200);
    this.active = 0;
    if (!this.items.length) return this.close();
    this.paint();
  }

  paint() {
    clear(this.list);
    this.items.forEach((item, i) => {
      const li = h("li", { role: "option", id: `sugg-${i}`, "aria-selected": String(i === this.active), onmousedown: (e) => { e.preventDefault(); this.accept(item); } },
        item.label, h("small", {}, item.note));
      this.list.append(li);
    });
    this.list.hidden = false;
    this.textarea.setAttribute("aria-activedescendant", `sugg-${this.active}`);
    this.list.querySelector('[aria-selected="true"]')?.scrollIntoView({ block: "nearest" });
  }

  accept(item) {
    if (!item) return;
    const text = this.textarea.value;
    const cursor = this.textarea.selectionStart;
    const before = text.slice(0, this.ctx.from);
    const after = text.slice(cursor).replace(/^[^\s&|}]*"?/, "");
    this.textarea.value = before + item.insert + after;
    const at = before.length + item.insert.length;
    this.textarea.setSelectionRange(at, at);
    this.textarea.focus();
    this.close();
    if (item.reopen) this.suggest(true);
  }

  close() {
    this.list.hidden = true;
    this.textarea.removeAttribute("aria-activedescendant");
  }

  /// Shows the API's message at its line and column, with the line and a caret under the column.
  showError(message) {
    clear(this.error);
    const pos = parseErrorPosition(message);
    if (!pos) { this.error.append(message); return; }
    const lines = this.textarea.value.split("\n");
    const line = lines[pos.line - 1] ?? "";
    this.error.append(
      h("div", { class: "parse-error-at" }, `Line ${pos.line}, column ${pos.column}: ${pos.message}`),
      h("pre", { "aria-hidden": "true" }, `${line}\n${" ".repeat(Math.max(0, pos.column - 1))}^`),
    );
    this.error.dataset.line = pos.line;
    this.error.dataset.column = pos.column;
    // Put the cursor where the parser stopped.
    let offset = 0;
    for (let i = 0; i < pos.line - 1; i++) offset += lines[i].length + 1;
    offset += pos.column - 1;
    this.textarea.focus();
    this.textarea.setSelectionRange(offset, Math.min(offset + 1, this.textarea.value.length));
  }

  clearError() {
    clear(this.error);
    delete this.error.dataset.line;
    delete this.error.dataset.column;
  }
}

export { OPERATORS };
