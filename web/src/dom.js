// Small DOM helpers: element construction, icons, times and durations.

const SVG = "http://www.w3.org/2000/svg";

// h builds an element: h("button", {class: "x", onclick: f, "aria-label": "y"}, "text", child, [more]).
// Attributes that are null, undefined or false are left out; true sets an empty attribute.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  if (!attrs) return;
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") {
      el.addEventListener(k.slice(2), v);
    } else if (k === "dataset") {
      Object.assign(el.dataset, v);
    } else if (k === "value" || k === "checked" || k === "selected") {
      el[k] = v;
    } else {
      el.setAttribute(k, v === true ? "" : String(v));
    }
  }
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

// Icons: 24x24 outlines drawn for this page. Each is a list of SVG elements.
const ICONS = {
  check: [["circle", { cx: 12, cy: 12, r: 10, fill: "currentColor", stroke: "none" }], ["path", { d: "M7.5 12.3l3 3 6-6.3", stroke: "#fff", "stroke-width": 2.4 }]],
  alert: [["circle", { cx: 12, cy: 12, r: 10, fill: "currentColor", stroke: "none" }], ["path", { d: "M12 6.8v6.4", stroke: "#fff", "stroke-width": 2.4 }], ["circle", { cx: 12, cy: 16.9, r: 1.4, fill: "#fff", stroke: "none" }]],
  update: [["circle", { cx: 12, cy: 12, r: 10, fill: "currentColor", stroke: "none" }], ["path", { d: "M17 12a5 5 0 1 1-1.6-3.7", stroke: "#fff", "stroke-width": 2.2 }], ["path", { d: "M16.2 5.6v3.2h-3.2", stroke: "#fff", "stroke-width": 2.2 }]],
  clock: [["circle", { cx: 12, cy: 12, r: 9 }], ["path", { d: "M12 7v5l3 2" }]],
  cancelled: [["circle", { cx: 12, cy: 12, r: 9 }], ["path", { d: "M5.7 18.3L18.3 5.7" }]],
  spinner: [["circle", { cx: 12, cy: 12, r: 9, opacity: 0.25 }], ["path", { d: "M21 12a9 9 0 0 0-9-9" }]],
  trash: [["path", { d: "M4 7h16M9.5 7V4.5h5V7M6.5 7l1 13h9l1-13M10 11v5.5M14 11v5.5" }]],
  plus: [["path", { d: "M12 5v14M5 12h14" }]],
  chevron: [["path", { d: "M9 6l6 6-6 6" }]],
  refresh: [["path", { d: "M19.5 12A7.5 7.5 0 1 1 17 6.4" }], ["path", { d: "M17.8 3v4.2h-4.2" }]],
  back: [["path", { d: "M15 5l-7 7 7 7" }]],
  close: [["path", { d: "M6 6l12 12M18 6L6 18" }]],
  folder: [["path", { d: "M3 7.5A1.5 1.5 0 0 1 4.5 6h4.3l2 2h8.7A1.5 1.5 0 0 1 21 9.5v8a1.5 1.5 0 0 1-1.5 1.5h-15A1.5 1.5 0 0 1 3 17.5z" }]],
  git: [["circle", { cx: 6, cy: 6, r: 2.2 }], ["circle", { cx: 6, cy: 18, r: 2.2 }], ["circle", { cx: 18, cy: 9, r: 2.2 }], ["path", { d: "M6 8.2v7.6M18 11.2c0 3-3.5 3.3-10.2 5.6" }]],
  key: [["circle", { cx: 8, cy: 15, r: 4 }], ["path", { d: "M11 12l8-8M16 7l2.5 2.5M14 9l2 2" }]],
  build: [["path", { d: "M14.5 6.5a4 4 0 0 0 5 5l-8.8 8.8a2.1 2.1 0 0 1-3-3z" }], ["path", { d: "M14.5 6.5l3-3a4 4 0 0 0-3 3z" }]],
  save: [["path", { d: "M5 4h11l3 3v12a1 1 0 0 1-1 1H6a1 1 0 0 1-1-1z" }], ["path", { d: "M8 4v5h7V4M8 20v-6h8v6" }]],
  image: [["path", { d: "M3 8l9-5 9 5-9 5z" }], ["path", { d: "M3 8v8l9 5 9-5V8M12 13v8" }]],
  user: [["circle", { cx: 12, cy: 8, r: 4 }], ["path", { d: "M4 21c.8-4 4-6 8-6s7.2 2 8 6" }]],
  info: [["circle", { cx: 12, cy: 12, r: 9 }], ["path", { d: "M12 11v6" }], ["circle", { cx: 12, cy: 7.7, r: 1.1, fill: "currentColor", stroke: "none" }]],
  warn: [["path", { d: "M12 3.5l9.5 16.5h-19z" }], ["path", { d: "M12 10v4.5" }], ["circle", { cx: 12, cy: 17.2, r: 1.1, fill: "currentColor", stroke: "none" }]],
};

// icon returns an SVG icon; decorative (aria-hidden) unless label is given.
export function icon(name, { label, cls, size = 20 } = {}) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", size);
  svg.setAttribute("height", size);
  svg.setAttribute("fill", "none");
  svg.setAttribute("stroke", "currentColor");
  svg.setAttribute("stroke-width", "1.8");
  svg.setAttribute("stroke-linecap", "round");
  svg.setAttribute("stroke-linejoin", "round");
  svg.setAttribute("class", `icon icon-${name}${cls ? " " + cls : ""}`);
  if (label) {
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", label);
  } else {
    svg.setAttribute("aria-hidden", "true");
  }
  svg.setAttribute("focusable", "false");
  for (const [tag, attrs] of ICONS[name] ?? []) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    svg.append(el);
  }
  return svg;
}

// Image statuses as the page shows them.
export const IMAGE_STATUS = {
  built: { icon: "check", label: "Built", tip: "Built: the last successful build is of the current definition.", about: "The last successful build is of the current definition." },
  not_built: { icon: "alert", label: "Not built", tip: "Not built: no build of this image has succeeded yet.", about: "No build of this image has succeeded yet." },
  modified: { icon: "update", label: "Modified", tip: "Modified: the definition changed after the last successful build. Build it again to update the image.", about: "The definition changed after the last successful build. Build it again to update the image." },
};

export const BUILD_STATUS = {
  queued: { icon: "clock", label: "Queued" },
  running: { icon: "spinner", label: "In progress" },
  succeeded: { icon: "check", label: "Succeeded" },
  failed: { icon: "alert", label: "Failed" },
  cancelled: { icon: "cancelled", label: "Cancelled" },
};

export const isActive = (b) => b && (b.status === "queued" || b.status === "running");

let tipSeq = 0;

// withTooltip wraps trigger (a focusable element) with a tooltip shown on
// hover and keyboard focus, and links it with aria-describedby.
export function withTooltip(trigger, text, { cls } = {}) {
  const id = `tip-${++tipSeq}`;
  const tip = h("span", { class: "tooltip", role: "tooltip", id }, text);
  trigger.setAttribute("aria-describedby", [trigger.getAttribute("aria-describedby"), id].filter(Boolean).join(" "));
  return h("span", { class: `has-tooltip${cls ? " " + cls : ""}` }, trigger, tip);
}

const dateFmt = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const secondsFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });

// clock formats a time of day with seconds.
export const clock = (d) => secondsFmt.format(d instanceof Date ? d : new Date(d));

// when formats a time as a date and time, or "today" and the time.
export function when(iso, seconds = false) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const today = new Date();
  if (d.toDateString() === today.toDateString()) return `today ${(seconds ? secondsFmt : timeFmt).format(d)}`;
  return dateFmt.format(d);
}

export function timeEl(iso, seconds = false) {
  return h("time", { datetime: iso, title: iso ? new Date(iso).toString() : null }, when(iso, seconds));
}

// plainMessage drops the field and line that an API message repeats.
export function plainMessage(message, field) {
  let m = message || "";
  if (field && m.startsWith(field + ": ")) m = m.slice(field.length + 2);
  m = m.replace(/^line \d+: /, "");
  return m ? m[0].toUpperCase() + m.slice(1) : m;
}

// duration formats seconds as "45 s", "3 min 05 s" or "1 h 02 min".
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
}

// NAME_RE is the contract's image name: a lower-case OCI repository path.
export const NAME_RE = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/;
export const CREDENTIAL_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
