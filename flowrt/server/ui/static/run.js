// One run: status and error (with traceback), actions, input/state/outputs, the timeline
// with a bar per step, and the flow graph with the path taken. Live via /v1/runs/{id}/events.

import { api, stream } from "./api.js";
import { ENDED, confirmAction, errorBox, formatDuration, formatTime, h, jsonTree, runDuration, setLive, statusBadge, throttle } from "./dom.js";
import { drawGraph, pathOf } from "./graph.js";

// Steps from the timeline: a NODE_STARTED and what ended it (finished, failed, waiting).
export function stepsOf(events) {
  const steps = [];
  let open = null;
  for (const e of events) {
    if (e.type === "NODE_STARTED") {
      open = { nodeId: e.nodeId, attempt: e.attempt, start: Date.parse(e.at), end: null, outcome: "running" };
      steps.push(open);
    } else if (open && ["NODE_FINISHED", "NODE_FAILED", "RUN_WAITING", "RUN_ABORTED"].includes(e.type)) {
      open.end = Date.parse(e.at);
      open.outcome = { NODE_FINISHED: "ok", NODE_FAILED: "failed", RUN_WAITING: "wait", RUN_ABORTED: "failed" }[e.type];
      open = null;
    }
  }
  return steps;
}

function eventSummary(e) {
  const p = e.payloadJson || {};
  switch (e.type) {
    case "NODE_FAILED":
    case "RUN_ABORTED":
      return p.error ? `${p.error.code}: ${p.error.message}${p.retryInMs !== undefined ? ` (retry in ${formatDuration(p.retryInMs)})` : ""}` : "";
    case "RUN_WAITING":
      return `${p.reason || ""}${p.until && p.until !== "manual" ? ` until ${p.until}` : ""}`;
    case "RUN_RESUMED":
      return `by ${p.by || "api"}`;
    case "RUN_CANCELLED":
      return [p.by ? `by ${p.by}` : "", p.reason || ""].filter(Boolean).join(" · ");
    case "RUN_RETRIED":
      return `by ${p.by || "api"} · from ${p.fromNode}`;
    case "RUN_REWOUND":
      return `by ${p.by || "api"} · to ${p.toNode} as before #${p.seq}`;
    case "NODE_FINISHED":
      return p.cached ? "cached (idempotency key)" : "";
    default:
      return "";
  }
}

// The actions a run offers, each with when it applies: {id, label, available(run), run: async (run) => run|null}
// (null: not confirmed), or {form: (run) => element} for one that needs input first.
const runPath = (run, action) => `/v1/runs/${encodeURIComponent(run.runId)}/${action}`;

const ACTIONS = [
  {
    id: "resume",
    label: "Resume",
    available: (run) => run.status === "WAITING",
    form: (run) => resumeForm(run),
  },
  {
    id: "tick",
    label: "Tick",
    available: (run) => run.status === "RUNNING" || (run.status === "WAITING" && run.wakeAt),
    run: async (run) =>
      (await confirmAction("Execute one step?", h("p", {}, `POST /v1/runs/${run.runId}/tick runs the next step of this run now.`), "Tick")) &&
      api(`/v1/runs/${encodeURIComponent(run.runId)}/tick`, { method: "POST" }),
  },
  {
    id: "cancel",
    label: "Cancel run",
    danger: true,
    available: (run) => !ENDED.has(run.status),
    run: async (run) => {
      const reason = h("input", { name: "reason", placeholder: "reason (optional)", "aria-label": "reason" });
      const ok = await confirmAction("Cancel this run?", [h("p", {}, "A cancelled run stops for good; it cannot be resumed."), reason], "Cancel run");
      if (!ok) return null;
      return api(`/v1/runs/${encodeURIComponent(run.runId)}/cancel`, { method: "POST", body: reason.value.trim() ? { reason: reason.value.trim() } : {} });
    },
  },
  {
    id: "retry",
    label: "Retry",
    available: (run) => run.status === "FAILED" || run.status === "CANCELLED",
    run: async (run) => {
      const body = h("p", {}, `The run continues at ${run.currentNodeId} with its state and outputs as they are; that node's failure count starts again.`);
      if (!(await confirmAction("Retry this run?", body, "Retry"))) return null;
      return api(runPath(run, "retry"), { method: "POST" });
    },
  },
  {
    id: "rewind",
    label: "Rewind…",
    available: (run) => run.status !== "RUNNING",
    run: async (run) => {
      const events = await api(runPath(run, "timeline"));
      const started = [...new Set(events.filter((e) => e.type === "NODE_STARTED").map((e) => e.nodeId))];
      if (!started.length) throw new Error("this run has not started a node yet");
      const select = h("select", { name: "toNode", "aria-label": "node to rewind to" }, started.map((n) => h("option", { value: n }, n)));
      const text = "The run continues from this node with the state and outputs it had just before the node last started; outputs of later nodes are removed. Every event stays in the timeline.";
      if (!(await confirmAction("Rewind this run?", [h("p", {}, text), h("label", {}, "Node ", select)], "Rewind"))) return null;
      return api(runPath(run, "rewind"), { method: "POST", body: { toNode: select.value } });
    },
  },
];

function resumeForm(run) {
  const editor = h("textarea", { class: "json-editor", rows: 4, spellcheck: "false", "aria-label": "resume payload (JSON)" }, "{}");
  const problem = h("p", { class: "error", hidden: true, role: "status" });
  const send = h("button", { type: "submit", class: "primary" }, "Resume");
  const check = () => {
    try {
      JSON.parse(editor.value.trim() === "" ? "null" : editor.value);
      problem.hidden = true;
      send.disabled = false;
      return true;
    } catch (error) {
      problem.textContent = `Invalid JSON: ${error.message}`;
      problem.hidden = false;
      send.disabled = true;
      return false;
    }
  };
  editor.addEventListener("input", check);
  const form = h(
    "form",
    { class: "resume" },
    h("label", {}, `Resume payload (JSON)${run.waitReason ? ` — waiting for: ${run.waitReason}` : ""}`, editor),
    problem,
    send
  );
  form.submitAction = async () => {
    if (!check()) return null;
    const text = editor.value.trim();
    const payload = text === "" ? null : JSON.parse(text);
    const ok = await confirmAction("Resume this run?", [h("p", {}, "It continues with this payload:"), h("pre", { class: "code" }, JSON.stringify(payload, null, 2))], "Resume");
    if (!ok) return null;
    return api(`/v1/runs/${encodeURIComponent(run.runId)}/resume`, { method: "POST", body: { payload } });
  };
  return form;
}

export async function mountRun(root, runId, { signal }) {
  let run;
  const events = [];
  let flow = null;
  try {
    run = await api(`/v1/runs/${encodeURIComponent(runId)}`, { signal });
  } catch (error) {
    root.replaceChildren(h("h1", {}, "Run"), errorBox(error));
    return;
  }
  const flows = await api("/v1/flows", { signal }).catch(() => []);
  flow = flows.find((f) => f.flowId === run.flowId && f.version === run.flowVersion) || null;

  const header = h("section", { class: "run-header" });
  const actions = h("section", { class: "actions", "aria-label": "actions" });
  const result = h("div", { class: "action-result", role: "status", "aria-live": "polite" });
  const errorPanel = h("section", { class: "run-error" });
  const graph = h("section", { class: "panel graph-panel" });
  const data = h("section", { class: "panel data" });
  const steps = h("div", { class: "steps" });
  const eventsBody = h("tbody");
  const timeline = h(
    "section",
    { class: "panel timeline" },
    h("h2", {}, "Timeline"),
    steps,
    h(
      "div",
      { class: "table-wrap" },
      h("table", { class: "events" }, h("thead", {}, h("tr", {}, ["#", "Time", "Event", "Node", "Attempt", "Details"].map((t) => h("th", {}, t)))), eventsBody)
    )
  );
  root.replaceChildren(header, actions, result, errorPanel, h("div", { class: "two" }, graph, data), timeline);

  const drawHeader = () => {
    header.replaceChildren(
      h("h1", {}, "Run ", h("span", { class: "mono" }, run.runId)),
      h(
        "dl",
        { class: "facts" },
        h("div", {}, h("dt", {}, "Status"), h("dd", { id: "run-status" }, statusBadge(run.status))),
        h("div", {}, h("dt", {}, "Flow"), h("dd", {}, h("a", { href: `/ui/flows/${encodeURIComponent(run.flowId)}?version=${encodeURIComponent(run.flowVersion)}` }, `${run.flowId}@${run.flowVersion}`))),
        h("div", {}, h("dt", {}, "Current node"), h("dd", { class: "mono" }, run.currentNodeId || "—")),
        h("div", {}, h("dt", {}, "Started"), h("dd", {}, formatTime(run.createdAt))),
        h("div", {}, h("dt", {}, ENDED.has(run.status) ? "Took" : "Running for"), h("dd", {}, formatDuration(runDuration(run)))),
        run.tenantId ? h("div", {}, h("dt", {}, "Tenant"), h("dd", {}, run.tenantId)) : null,
        run.waitReason ? h("div", {}, h("dt", {}, "Waiting for"), h("dd", {}, run.waitReason, run.waitUntil && run.waitUntil !== "manual" ? ` (until ${run.waitUntil})` : "")) : null,
        run.wakeAt ? h("div", {}, h("dt", {}, "Wakes at"), h("dd", {}, formatTime(run.wakeAt))) : null
      )
    );
  };

  const drawError = () => {
    const e = run.error;
    if (!e) return errorPanel.replaceChildren();
    errorPanel.replaceChildren(
      h(
        "div",
        { class: "error-box" },
        h("h2", {}, "Error"),
        h("p", {}, h("strong", { class: "mono" }, e.code), ": ", e.message, e.retryable ? h("span", { class: "muted" }, " (retryable)") : null),
        e.traceback ? h("details", { open: true, class: "traceback" }, h("summary", {}, "Traceback"), h("pre", { class: "code" }, e.traceback)) : null
      )
    );
  };

  let follow = () => {}; // set below, once the timeline is loaded
  let shownActions = null;
  const drawActions = () => {
    const available = ACTIONS.filter((a) => a.available(run));
    const key = `${run.status}:${available.map((a) => a.id).join(",")}`;
    if (key === shownActions) return; // keep what is being typed into a form
    shownActions = key;
    const nodes = [];
    for (const action of available) {
      if (action.form) {
        const form = action.form(run);
        form.addEventListener("submit", (event) => {
          event.preventDefault();
          perform(action, () => form.submitAction());
        });
        nodes.push(form);
      } else {
        nodes.push(h("button", { type: "button", class: action.danger ? "danger" : "secondary", "data-action": action.id, onclick: () => perform(action, () => action.run(run)) }, action.label));
      }
    }
    actions.replaceChildren(...(nodes.length ? [h("h2", {}, "Actions"), ...nodes] : []));
  };

  const perform = async (action, go) => {
    try {
      const answer = await go();
      if (!answer) return; // not confirmed
      run = answer;
      result.replaceChildren(h("p", { class: "ok" }, `${action.label.replace("…", "")}: done — the run is now ${answer.status}.`));
      redraw();
      if (!ENDED.has(answer.status)) follow(); // a retried or rewound run goes on: follow it again
    } catch (error) {
      result.replaceChildren(errorBox(error));
    }
  };

  const drawData = () => {
    const section = (title, value, open) => h("details", { class: "data-section", open }, h("summary", {}, title), jsonTree(value));
    data.replaceChildren(
      h("h2", {}, "Data"),
      section("Input", run.inputJson, true),
      section("State", run.stateJson, true),
      section("Outputs", run.outputsJson, true),
      Object.keys(run.attempts || {}).length ? section("Attempts", run.attempts, false) : null
    );
  };

  const drawGraphPanel = () => {
    if (!flow) {
      graph.replaceChildren(h("h2", {}, "Graph"), h("p", { class: "muted" }, `${run.flowId}@${run.flowVersion} is not registered on this server.`));
      return;
    }
    graph.replaceChildren(h("h2", {}, "Graph"), h("div", { class: "graph-wrap" }, drawGraph(flow.definitionJson, pathOf(run, events))));
  };

  const drawSteps = () => {
    const list = stepsOf(events);
    if (!list.length) return steps.replaceChildren();
    const start = Date.parse(run.createdAt);
    const last = Math.max(start + 1, ...list.map((s) => s.end ?? Date.now()), ENDED.has(run.status) ? Date.parse(run.updatedAt) : Date.now());
    const span = last - start;
    steps.replaceChildren(
      ...list.map((s) => {
        const end = s.end ?? Date.now();
        const bar = h("span", { class: `bar bar-${s.outcome}` });
        bar.style.marginLeft = `${(((s.start - start) / span) * 100).toFixed(2)}%`;
        bar.style.width = `${Math.max(0.5, ((end - s.start) / span) * 100).toFixed(2)}%`;
        return h(
          "div",
          { class: "step", "data-node": s.nodeId },
          h("span", { class: "step-name mono" }, s.nodeId, s.attempt > 1 ? h("span", { class: "muted" }, ` #${s.attempt}`) : null),
          h("span", { class: "track" }, bar),
          h("span", { class: "step-time" }, s.end === null ? "…" : formatDuration(end - s.start))
        );
      })
    );
  };

  const eventRow = (e) =>
    h(
      "tr",
      { "data-seq": String(e.seq), class: `event event-${e.type.toLowerCase()}` },
      h("td", { class: "mono" }, String(e.seq)),
      h("td", { class: "mono nowrap" }, formatTime(e.at)),
      h("td", {}, h("span", { class: "event-type" }, e.type)),
      h("td", { class: "mono" }, e.nodeId || ""),
      h("td", {}, e.attempt ?? ""),
      h("td", { class: "details" }, eventSummary(e), e.payloadJson && e.payloadJson.error && e.payloadJson.error.traceback ? h("details", {}, h("summary", {}, "traceback"), h("pre", { class: "code" }, e.payloadJson.error.traceback)) : null)
    );

  const redraw = () => {
    drawHeader();
    drawError();
    drawActions();
    drawData();
    drawGraphPanel();
    drawSteps();
  };

  const refreshRun = throttle(async () => {
    try {
      run = await api(`/v1/runs/${encodeURIComponent(runId)}`, { signal });
      redraw();
    } catch (_) {
      /* the stream goes on; the next event tries again */
    }
  }, 250);

  const addEvents = (list) => {
    for (const e of list) {
      if (events.length && e.seq <= events[events.length - 1].seq) continue;
      events.push(e);
      eventsBody.append(eventRow(e));
    }
  };

  try {
    addEvents(await api(`/v1/runs/${encodeURIComponent(runId)}/timeline`, { signal }));
  } catch (error) {
    timeline.append(errorBox(error));
  }
  redraw();

  // The stream ends with the run; a retry or rewind starts it again (follow() after perform).
  let following = false;
  follow = () => {
    if (following) return;
    following = true;
    const lastSeq = events.length ? events[events.length - 1].seq : 0;
    stream(`/v1/runs/${encodeURIComponent(runId)}/events?after=${lastSeq}`, {
      signal,
      lastId: lastSeq,
      onState: setLive,
      onMessage: (m) => {
        if (m.event === "end") {
          run = m.data;
          redraw();
          setLive(false);
          following = false;
          return;
        }
        addEvents([m.data]);
        refreshRun();
      },
    }).catch(() => {
      following = false;
      setLive(false);
    });
  };
  follow();

  const ticker = setInterval(() => {
    if (!ENDED.has(run.status)) {
      drawHeader();
      drawSteps();
    }
  }, 1000);
  signal.addEventListener("abort", () => clearInterval(ticker), { once: true });
}
