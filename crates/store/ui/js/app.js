// The single-page app: hash routes (#/search, #/trace/<id>, #/compare, #/map, #/service/<name>,
// #/health, #/settings), so a link holds the whole view and the store serves one page.
import { h, clear } from "./dom.js";
import { searchPage } from "./search.js";
import { tracePage } from "./trace_view.js";
import { comparePage } from "./compare.js";
import { mapPage, servicePage } from "./service_map.js";
import { healthPage } from "./health.js";
import { settings, saveSettings, credential, saveCredential } from "./settings.js";

const main = document.getElementById("main");

/// Goes to `hash` and renders it; with `urlOnly` only records it (a new history entry, or the
/// current one replaced when `replace`), for views that already show what the URL says.
function navigate(hash, urlOnly = false, replace = false) {
  if (urlOnly) {
    if (location.hash !== hash) history[replace ? "replaceState" : "pushState"](null, "", hash);
    return;
  }
  if (location.hash === hash) route();
  else location.hash = hash;
}

function settingsPage(root) {
  const s = settings();
  const logs = h("input", { id: "logs-url", size: 90, value: s.logsUrl, placeholder: "http://localhost:3000/explore?left=…${traceId}…" });
  const tenant = h("input", { id: "tenant", value: s.tenant, placeholder: "empty: single-tenant" });
  const saved = h("span", { class: "muted", "aria-live": "polite" });
  const c = {};
  clear(root).append(h("h1", {}, "Settings"), h("p", { class: "muted" }, "Kept in this browser."),
    h("div", { class: "panel" },
      h("label", {}, h("strong", {}, "Logs URL template"), h("br"), logs),
      h("p", { class: "muted" }, "Opened from a span's detail. Variables: ${traceId}, ${spanId}, ${service}, ${start} and ${end} (unix ms, the span's time ± 1 min). E.g. Grafana Explore on Loki: ",
        h("code", {}, 'http://localhost:3000/explore?left={"queries":[{"expr":"{service_name=\\"${service}\\"} |= \\"${traceId}\\""}],"range":{"from":"${start}","to":"${end}"}}')),
      h("label", {}, h("strong", {}, "Tenant (X-Scope-OrgID)"), h("br"), tenant),
      h("p", { class: "muted" }, "Only when the store runs with multitenancy_enabled."),
      credentialFields(c),
      h("button", { class: "primary", id: "save-settings", onclick: () => {
        saveSettings({ logsUrl: logs.value.trim(), tenant: tenant.value.trim() });
        saveCredential({ kind: c.kind.value, token: c.token.value.trim(), username: c.username.value.trim(), password: c.password.value });
        saved.textContent = "Saved.";
      } }, "Save"), " ", saved));
}

/// The credential inputs (for a store with `auth`), into `c`; only the chosen kind's are shown.
function credentialFields(c) {
  const now = credential();
  c.kind = h("select", { id: "credential-kind" },
    ...[["", "none"], ["bearer", "Bearer token"], ["basic", "User and password"]].map(([value, label]) =>
      h("option", { value, ...(now.kind === value ? { selected: true } : {}) }, label)));
  c.token = h("input", { id: "credential-token", type: "password", size: 40, value: now.token, autocomplete: "off" });
  c.username = h("input", { id: "credential-username", value: now.username, autocomplete: "username" });
  c.password = h("input", { id: "credential-password", type: "password", value: now.password, autocomplete: "current-password" });
  const token = h("label", {}, "Token ", c.token);
  const basic = h("span", {}, h("label", {}, "User ", c.username), " ", h("label", {}, "Password ", c.password));
  const show = () => { token.hidden = c.kind.value !== "bearer"; basic.hidden = c.kind.value !== "basic"; };
  c.kind.addEventListener("change", show);
  show();
  return h("div", {},
    h("label", {}, h("strong", {}, "Credential"), h("br"), c.kind), " ", token, basic,
    h("p", { class: "muted" }, "When the store runs with auth: sent as the Authorization header. Kept for this tab only."));
}

function route() {
  const hash = location.hash || "#/search";
  const [path, query] = hash.slice(1).split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  const page = parts[0] || "search";
  for (const a of document.querySelectorAll(".top nav a")) {
    const current = a.dataset.page === page || (page === "trace" && a.dataset.page === "search") || (page === "service" && a.dataset.page === "map");
    if (current) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  document.title = `Threadline · ${page}`;
  main.dataset.page = page;
  delete main.dataset.interactiveMs;
  delete main.dataset.renderedMs;
  if (page === "trace" && parts[1]) return tracePage(main, parts[1], params, navigate);
  if (page === "compare") return comparePage(main, params, navigate);
  if (page === "map") return mapPage(main, params, navigate);
  if (page === "service" && parts[1]) return servicePage(main, decodeURIComponent(parts[1]), params, navigate);
  if (page === "health") return healthPage(main, params, navigate);
  if (page === "settings") return settingsPage(main);
  return searchPage(main, params, navigate);
}

window.addEventListener("hashchange", route);
document.addEventListener("keydown", (e) => {
  if (e.key === "/" && !/^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement?.tagName)) {
    const target = document.getElementById("traceql") || document.getElementById("find");
    if (target) { e.preventDefault(); target.focus(); }
  }
});
route();
