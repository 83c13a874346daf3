// The runs list: status counts, filters, newest first with keyset paging, live via /v1/runs/changes.

import { api, query, stream } from "./api.js";
import { ENDED, errorBox, formatAge, formatDuration, h, runDuration, setLive, statusBadge, throttle } from "./dom.js";

const STATUSES = ["RUNNING", "WAITING", "COMPLETED", "FAILED", "CANCELLED"];
const PAGE = 50;

// The smallest UUIDv7 run id issued at `ms`: a cursor that lists runs started before it.
function cursorBefore(ms) {
  const hex = Math.max(0, Math.floor(ms)).toString(16).padStart(12, "0");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-0000-0000-000000000000`;
}

function localInput(ms) {
  if (!ms) return "";
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 16);
}

function filtersFromUrl(fixedFlow) {
  const q = new URLSearchParams(location.search);
  const time = (name) => {
    const v = q.get(name);
    const ms = v ? Date.parse(v) : NaN;
    return Number.isNaN(ms) ? null : ms;
  };
  return {
    status: q.get("status") || "",
    flowId: fixedFlow || q.get("flowId") || "",
    tenantId: q.get("tenantId") || "",
    from: time("from"),
    to: time("to"),
  };
}

function runRow(run, now) {
  return h(
    "tr",
    { "data-run": run.runId, class: `run-row status-row-${run.status.toLowerCase()}` },
    h("td", { class: "mono id" }, h("a", { href: `/ui/runs/${encodeURIComponent(run.runId)}`, title: run.runId }, run.runId)),
    h(
      "td",
      {},
      h("a", { href: `/ui/flows/${encodeURIComponent(run.flowId)}?version=${encodeURIComponent(run.flowVersion)}` }, run.flowId),
      h("span", { class: "muted" }, `@${run.flowVersion}`)
    ),
    h("td", {}, statusBadge(run.status)),
    h("td", { class: "mono" }, run.currentNodeId || "—"),
    h("td", { class: "age", title: run.createdAt }, formatAge(run.createdAt, now)),
    h("td", { class: "duration" }, formatDuration(runDuration(run, now))),
    h("td", { class: "muted" }, run.tenantId || "")
  );
}

// Mounts the list into `root`. With `fixedFlow`, it is a flow's "recent runs" (no flow filter, no URL).
export async function mountRuns(root, { fixedFlow = null, signal, limit = PAGE } = {}) {
  const filters = filtersFromUrl(fixedFlow);
  const runs = new Map(); // runId -> run, in display order (newest first)
  let nextCursor = null;
  let exhausted = false;

  const counts = h("div", { class: "counts", "aria-label": "runs by status" });
  const body = h("tbody");
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "Load older runs");
  const message = h("div", { class: "list-message" });
  const table = h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "runs" },
      h("thead", {}, h("tr", {}, ["Run", "Flow", "Status", "Node", "Started", "Duration", "Tenant"].map((t) => h("th", {}, t)))),
      body
    )
  );

  const flowSelect = h("select", { name: "flowId", "aria-label": "flow" }, h("option", { value: "" }, "All flows"));
  const statusSelect = h(
    "select",
    { name: "status", "aria-label": "status" },
    h("option", { value: "" }, "All statuses"),
    STATUSES.map((s) => h("option", { value: s, selected: s === filters.status }, s))
  );
  const tenant = h("input", { name: "tenantId", placeholder: "tenant", value: filters.tenantId, "aria-label": "tenant" });
  const from = h("input", { type: "datetime-local", name: "from", value: localInput(filters.from), "aria-label": "started after" });
  const to = h("input", { type: "datetime-local", name: "to", value: localInput(filters.to), "aria-label": "started before" });
  const form = h(
    "form",
    { class: "filters" },
    statusSelect,
    fixedFlow ? null : flowSelect,
    tenant,
    h("label", {}, "from ", from),
    h("label", {}, "to ", to),
    h("button", { type: "submit", class: "secondary" }, "Apply")
  );
  root.replaceChildren(counts, form, table, more, message);

  if (!fixedFlow)
    api("/v1/flows", { signal })
      .then((flows) => {
        for (const id of [...new Set(flows.map((f) => f.flowId))].sort())
          flowSelect.append(h("option", { value: id, selected: id === filters.flowId }, id));
      })
      .catch(() => {});

  const visible = (run) =>
    (!filters.status || run.status === filters.status) &&
    (!filters.flowId || run.flowId === filters.flowId) &&
    (!filters.tenantId || run.tenantId === filters.tenantId) &&
    (!filters.from || Date.parse(run.createdAt) >= filters.from) &&
    (!filters.to || Date.parse(run.createdAt) < filters.to);

  const render = () => {
    const now = Date.now();
    body.replaceChildren(...[...runs.values()].map((run) => runRow(run, now)));
    more.hidden = exhausted || !nextCursor;
    message.replaceChildren(runs.size ? "" : h("p", { class: "muted empty" }, "No runs match."));
  };

  const loadCounts = async () => {
    try {
      const c = await api(`/v1/runs/counts${query({ flowId: filters.flowId, tenantId: filters.tenantId })}`, { signal });
      counts.replaceChildren(
        ...STATUSES.map((s) =>
          h(
            "button",
            { type: "button", class: `count count-${s.toLowerCase()}${filters.status === s ? " active" : ""}`, "data-status": s, onclick: () => choose(s) },
            h("span", { class: "n" }, String(c[s] ?? 0)),
            " ",
            s.toLowerCase()
          )
        )
      );
    } catch (error) {
      if (!signal.aborted) counts.replaceChildren(errorBox(error));
    }
  };
  const refreshCounts = throttle(loadCounts, 1000);

  // Runs the stream delivered while the first page was being fetched: that page may have been
  // read before they existed (or changed), so they are put back on it once it arrives.
  let arrivedDuringReload = null;

  const load = async (append) => {
    const cursor = append ? nextCursor : filters.to ? cursorBefore(filters.to) : null;
    const arrived = append ? null : (arrivedDuringReload = new Map());
    try {
      const page = await api(
        `/v1/runs${query({ status: filters.status, flowId: filters.flowId, tenantId: filters.tenantId, limit, cursor })}`,
        { signal }
      );
      if (!append) runs.clear();
      for (const run of page.runs) {
        if (filters.from && Date.parse(run.createdAt) < filters.from) {
          exhausted = true;
          break;
        }
        runs.set(run.runId, run);
      }
      nextCursor = page.nextCursor;
      exhausted = exhausted || !nextCursor || fixedFlow !== null;
      if (arrived && arrived.size) {
        const oldest = [...runs.keys()].pop();
        for (const run of arrived.values()) {
          const listed = runs.get(run.runId);
          if (listed && listed.updatedAt > run.updatedAt) continue; // the page read it later
          if (!visible(run)) runs.delete(run.runId);
          else if (listed || exhausted || !oldest || run.runId > oldest) runs.set(run.runId, run);
        }
        const sorted = [...runs.values()].sort((a, b) => (a.runId < b.runId ? 1 : -1));
        runs.clear();
        for (const r of sorted) runs.set(r.runId, r);
      }
      render();
    } catch (error) {
      if (!signal.aborted) message.replaceChildren(errorBox(error));
    } finally {
      if (arrivedDuringReload === arrived) arrivedDuringReload = null;
    }
  };

  const apply = () => {
    filters.status = statusSelect.value;
    if (!fixedFlow) filters.flowId = flowSelect.value;
    filters.tenantId = tenant.value.trim();
    filters.from = from.value ? Date.parse(from.value) : null;
    filters.to = to.value ? Date.parse(to.value) : null;
    exhausted = false;
    if (!fixedFlow) {
      const q = query({
        status: filters.status,
        flowId: filters.flowId,
        tenantId: filters.tenantId,
        from: filters.from ? new Date(filters.from).toISOString() : "",
        to: filters.to ? new Date(filters.to).toISOString() : "",
      });
      history.replaceState(null, "", `/ui${q}`);
    }
    restart();
  };
  const choose = (status) => {
    statusSelect.value = filters.status === status ? "" : status;
    apply();
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    apply();
  });
  statusSelect.addEventListener("change", apply);
  flowSelect.addEventListener("change", apply);
  more.addEventListener("click", () => load(true));

  // A change: update the row, or show a new run that belongs on this page (newest first).
  const onRun = (run) => {
    if (arrivedDuringReload) arrivedDuringReload.set(run.runId, run);
    refreshCounts();
    const shown = runs.has(run.runId);
    if (!visible(run)) {
      if (shown) {
        runs.delete(run.runId);
        render();
      }
      return;
    }
    if (shown) {
      runs.set(run.runId, run);
      const row = body.querySelector(`tr[data-run="${CSS.escape(run.runId)}"]`);
      if (row) row.replaceWith(runRow(run, Date.now()));
      return;
    }
    const ids = [...runs.keys()];
    const oldest = ids[ids.length - 1];
    if (ids.length && run.runId < oldest && !exhausted) return; // belongs on a later page
    const sorted = [...runs.values(), run].sort((a, b) => (a.runId < b.runId ? 1 : -1));
    runs.clear();
    for (const r of sorted) runs.set(r.runId, r);
    render();
  };

  let live = null;
  const restart = () => {
    if (live) live.abort();
    live = new AbortController();
    signal.addEventListener("abort", () => live.abort(), { once: true });
    const mine = live;
    load(false);
    loadCounts();
    const path = `/v1/runs/changes${query({ status: filters.status, flowId: filters.flowId, tenantId: filters.tenantId })}`;
    stream(path, {
      signal: mine.signal,
      onState: setLive,
      onComment: (text) => {
        if (text === "subscribed" && !mine.signal.aborted) {
          load(false); // everything up to now; later changes arrive on the stream
          loadCounts();
        }
      },
      onMessage: (m) => m.event === "run" && onRun(m.data),
    }).catch(() => setLive(false));
  };
  restart();

  const ticker = setInterval(() => {
    const now = Date.now();
    for (const row of body.querySelectorAll("tr[data-run]")) {
      const run = runs.get(row.dataset.run);
      if (!run) continue;
      row.querySelector(".age").textContent = formatAge(run.createdAt, now);
      if (!ENDED.has(run.status)) row.querySelector(".duration").textContent = formatDuration(runDuration(run, now));
    }
  }, 5000);
  signal.addEventListener("abort", () => clearInterval(ticker), { once: true });
}
