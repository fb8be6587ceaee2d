// Tiny DOM helpers: h() builds elements (attributes, properties for on*, children).
export function h(tag, attrs = {}, ...children) {
  const svg = ["svg", "g", "rect", "circle", "line", "path", "text", "polyline", "title", "marker", "defs"].includes(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.setAttribute("class", value);
    else if (key === "style" && typeof value === "object") Object.assign(el.style, value);
    else if (key in el && !svg && key !== "list") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

/// An empty or error state that says what to do.
export function state(message, hint, kind = "") {
  return h("div", { class: `state ${kind}`, role: kind === "error" ? "alert" : "status" },
    h("strong", {}, message), hint ? h("div", { class: "muted" }, hint) : null);
}
