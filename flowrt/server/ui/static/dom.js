// Small DOM helpers shared by the pages. Text always goes in as text (never as HTML),
// so nothing a flow stores can turn into markup.

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function formatDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  if (ms < 0) ms = 0;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  const s = Math.round(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

export function formatAge(iso, now = Date.now()) {
  const ms = now - Date.parse(iso);
  if (ms < 5000) return "just now";
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function formatTime(iso) {
  const d = new Date(iso);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

export const ENDED = new Set(["COMPLETED", "FAILED", "CANCELLED"]);

export function runDuration(run, now = Date.now()) {
  const end = ENDED.has(run.status) ? Date.parse(run.updatedAt) : now;
  return end - Date.parse(run.createdAt);
}

export function statusBadge(status) {
  return h("span", { class: `status status-${status.toLowerCase()}` }, status);
}

export function shortId(runId) {
  return runId.length > 13 ? `${runId.slice(0, 8)}…${runId.slice(-4)}` : runId;
}

// JSON as a tree of <details>: objects and arrays fold, leaves are coloured by type.
export function jsonTree(value, { open = 2, label = null } = {}) {
  const leaf = (v) => {
    if (v === null) return h("span", { class: "j-null" }, "null");
    if (typeof v === "string") return h("span", { class: "j-str" }, JSON.stringify(v));
    if (typeof v === "number") return h("span", { class: "j-num" }, String(v));
    if (typeof v === "boolean") return h("span", { class: "j-bool" }, String(v));
    return h("span", {}, String(v));
  };
  const build = (v, key, depth) => {
    const name = key === null ? null : h("span", { class: "j-key" }, `${key}: `);
    if (v === null || typeof v !== "object") return h("div", { class: "j-row" }, name, leaf(v));
    const entries = Array.isArray(v) ? v.map((x, i) => [i, x]) : Object.entries(v);
    const summary = Array.isArray(v) ? `[${entries.length}]` : `{${entries.length}}`;
    if (!entries.length) return h("div", { class: "j-row" }, name, h("span", { class: "j-null" }, Array.isArray(v) ? "[]" : "{}"));
    return h(
      "details",
      { class: "j-node", open: depth < open },
      h("summary", {}, name, h("span", { class: "j-count" }, summary)),
      h("div", { class: "j-children" }, entries.map(([k, x]) => build(x, k, depth + 1)))
    );
  };
  if (label === null && value && typeof value === "object" && Object.keys(value).length) {
    // The top level unfolded: its section's own summary already says what it is.
    const entries = Array.isArray(value) ? value.map((x, i) => [i, x]) : Object.entries(value);
    return h("div", { class: "json" }, entries.map(([k, x]) => build(x, k, 1)));
  }
  return h("div", { class: "json" }, build(value, label, 0));
}

export function setLive(on) {
  const live = document.getElementById("live");
  if (!live) return;
  live.classList.toggle("on", on);
  live.querySelector("span").textContent = on ? "live" : "offline";
}

export function throttle(fn, ms) {
  let timer = null;
  let again = false;
  const run = () => {
    timer = setTimeout(() => {
      timer = null;
      if (again) {
        again = false;
        fn();
        run();
      }
    }, ms);
  };
  return () => {
    if (timer) {
      again = true;
      return;
    }
    fn();
    run();
  };
}

// A modal confirmation; resolves true when confirmed.
export function confirmAction(title, body, okLabel = "Confirm") {
  const dialog = document.getElementById("confirm-dialog");
  document.getElementById("confirm-title").textContent = title;
  const holder = document.getElementById("confirm-body");
  holder.replaceChildren(...(Array.isArray(body) ? body : [body]));
  document.getElementById("confirm-ok").textContent = okLabel;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

export function errorBox(error) {
  const code = error && error.code ? `${error.status || ""} ${error.code}: ` : "";
  return h("p", { class: "error", role: "alert" }, `${code}${error && error.message ? error.message : error}`);
}
