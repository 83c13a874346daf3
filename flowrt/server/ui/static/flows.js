// The flows: a list, and one flow with its graph, its nodes' settings, its edges and its recent runs.

import { api } from "./api.js";
import { errorBox, formatDuration, h } from "./dom.js";
import { drawGraph } from "./graph.js";
import { mountRuns } from "./runs.js";

export async function mountFlows(root, { signal }) {
  root.replaceChildren(h("h1", {}, "Flows"));
  let flows;
  try {
    flows = await api("/v1/flows", { signal });
  } catch (error) {
    root.append(errorBox(error));
    return;
  }
  if (!flows.length) {
    root.append(h("p", { class: "muted" }, "No flows are registered: start the server with --flows module:NAME."));
    return;
  }
  root.append(
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "flows" },
        h("thead", {}, h("tr", {}, ["Flow", "Version", "Description", "Nodes", "Entry"].map((t) => h("th", {}, t)))),
        h(
          "tbody",
          {},
          flows.map((f) =>
            h(
              "tr",
              { "data-flow": f.flowId },
              h("td", {}, h("a", { href: `/ui/flows/${encodeURIComponent(f.flowId)}?version=${encodeURIComponent(f.version)}` }, f.flowId)),
              h("td", { class: "mono" }, f.version),
              h("td", {}, f.definitionJson.description || ""),
              h("td", {}, String(Object.keys(f.definitionJson.nodes).length)),
              h("td", { class: "mono" }, f.definitionJson.entry)
            )
          )
        )
      )
    )
  );
}

export async function mountFlow(root, flowId, { signal }) {
  const wanted = new URLSearchParams(location.search).get("version");
  let flows;
  try {
    flows = (await api("/v1/flows", { signal })).filter((f) => f.flowId === flowId);
  } catch (error) {
    root.replaceChildren(h("h1", {}, flowId), errorBox(error));
    return;
  }
  const flow = flows.find((f) => f.version === wanted) || flows[flows.length - 1];
  if (!flow) {
    root.replaceChildren(h("h1", {}, flowId), h("p", { class: "error" }, `Flow ${flowId} is not registered on this server.`));
    return;
  }
  const d = flow.definitionJson;
  const versions = flows.length > 1
    ? h("p", {}, "Versions: ", flows.map((f) => [h("a", { href: `?version=${encodeURIComponent(f.version)}`, class: f === flow ? "active" : "" }, f.version), " "]))
    : null;
  const nodes = Object.values(d.nodes).map((n) =>
    h(
      "tr",
      { "data-node": n.id },
      h("td", { class: "mono" }, n.id, n.id === d.entry ? h("span", { class: "tag" }, "entry") : null),
      h("td", {}, n.retry ? `${n.retry.maxAttempts} attempts, ${n.retry.backoff}, ${formatDuration(n.retry.baseDelayMs)}${n.retry.maxDelayMs ? ` … ${formatDuration(n.retry.maxDelayMs)}` : ""}` : "—"),
      h("td", {}, n.timeoutMs ? formatDuration(n.timeoutMs) : "—"),
      h("td", {}, n.hasIdempotencyKey ? "yes" : "—"),
      h("td", {}, n.async ? "async" : "sync")
    )
  );
  const edges = d.edges.map((e) =>
    h("tr", {}, h("td", { class: "mono" }, e.from), h("td", { class: "mono" }, e.to), h("td", {}, String(e.priority)), h("td", e.condition ? { class: "mono" } : {}, e.hasCondition ? (e.condition ? `if ${e.condition}` : "conditional") : "always"))
  );
  const recent = h("div", { class: "recent" });
  root.replaceChildren(
    ...[h("h1", {}, "Flow ", h("span", { class: "mono" }, d.flowId), h("span", { class: "muted" }, `@${d.version}`)),
    d.description ? h("p", {}, d.description) : null,
    versions,
    h("section", { class: "panel graph-panel" }, h("h2", {}, "Graph"), h("div", { class: "graph-wrap" }, drawGraph(d))),
    h(
      "div",
      { class: "two" },
      h("section", { class: "panel" }, h("h2", {}, "Nodes"), h("div", { class: "table-wrap" }, h("table", { class: "nodes" }, h("thead", {}, h("tr", {}, ["Node", "Retry", "Timeout", "Idempotency key", "Handler"].map((t) => h("th", {}, t)))), h("tbody", {}, nodes)))),
      h("section", { class: "panel" }, h("h2", {}, "Edges"), h("p", { class: "muted" }, "From each node, edges are tried by priority (highest first); the first whose condition holds is taken."), h("div", { class: "table-wrap" }, h("table", { class: "edges" }, h("thead", {}, h("tr", {}, ["From", "To", "Priority", "Condition"].map((t) => h("th", {}, t)))), h("tbody", {}, edges))))
    ),
    h("section", { class: "panel" }, h("h2", {}, "Recent runs"), recent),
  ].filter(Boolean));
  await mountRuns(recent, { fixedFlow: flowId, signal, limit: 20 });
}
