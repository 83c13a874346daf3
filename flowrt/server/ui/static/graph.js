// A flow's graph as SVG, laid out in layers (a small Sugiyama-style layout):
// back edges found by depth-first search from the entry, layers by longest path over the
// rest, order within a layer by a few barycentre sweeps, then rows top to bottom.
// Fine for the tens of nodes a flow has; no library needed.

const SVG = "http://www.w3.org/2000/svg";
const ROW = 96;
const GAP = 28;
const NODE_H = 46;
const MARGIN = 24;

function el(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function formatMs(ms) {
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${+(ms / 1000).toFixed(1)} s`;
  return `${+(ms / 60000).toFixed(1)} min`;
}

function nodeNotes(node) {
  const notes = [];
  if (node.retry) notes.push(`retry ${node.retry.maxAttempts}× ${node.retry.backoff}`);
  if (node.timeoutMs) notes.push(`timeout ${formatMs(node.timeoutMs)}`);
  if (node.hasIdempotencyKey) notes.push("idempotent");
  return notes.join(" · ");
}

const clip = (text, max) => (text.length <= max ? text : `${text.slice(0, max - 1)}…`);

export function layout(definition) {
  const ids = Object.keys(definition.nodes);
  const out = new Map(ids.map((id) => [id, []]));
  for (const edge of definition.edges) if (out.has(edge.from) && out.has(edge.to)) out.get(edge.from).push(edge);

  // Depth-first from the entry, then from anything left: an edge into the stack is a back edge.
  const state = new Map();
  const back = new Set();
  const order = [];
  const visit = (id) => {
    state.set(id, 1);
    for (const edge of out.get(id)) {
      const s = state.get(edge.to);
      if (s === 1) back.add(edge);
      else if (!s) visit(edge.to);
    }
    state.set(id, 2);
    order.push(id);
  };
  const roots = [definition.entry, ...ids.filter((id) => id !== definition.entry)];
  for (const id of roots) if (!state.get(id)) visit(id);
  order.reverse(); // a topological order of the forward edges

  const layer = new Map(ids.map((id) => [id, 0]));
  for (const id of order)
    for (const edge of out.get(id)) if (!back.has(edge)) layer.set(edge.to, Math.max(layer.get(edge.to), layer.get(id) + 1));

  const rows = [];
  for (const id of order) (rows[layer.get(id)] ||= []).push(id);
  const forward = definition.edges.filter((e) => !back.has(e) && out.has(e.from) && out.has(e.to));
  const position = new Map();
  const place = () => rows.forEach((row) => row.forEach((id, i) => position.set(id, i)));
  place();
  const sweep = (neighbours) => (row) => {
    const score = new Map(
      row.map((id) => {
        const ns = neighbours(id);
        return [id, ns.length ? ns.reduce((a, n) => a + position.get(n), 0) / ns.length : position.get(id)];
      })
    );
    row.sort((a, b) => score.get(a) - score.get(b));
    row.forEach((id, i) => position.set(id, i));
  };
  const preds = (id) => forward.filter((e) => e.to === id).map((e) => e.from);
  const succs = (id) => forward.filter((e) => e.from === id).map((e) => e.to);
  for (let pass = 0; pass < 4; pass++) {
    rows.slice(1).forEach(sweep(preds));
    rows.slice(0, -1).reverse().forEach(sweep(succs));
  }

  const width = (id) => {
    const notes = nodeNotes(definition.nodes[id]);
    return Math.max(96, 16 + 8.2 * id.length, 12 + 6 * notes.length);
  };
  const rowWidths = rows.map((row) => row.reduce((a, id) => a + width(id), 0) + GAP * (row.length - 1));
  const total = Math.max(...rowWidths, 160);
  const boxes = new Map();
  rows.forEach((row, r) => {
    let x = MARGIN + (total - rowWidths[r]) / 2;
    for (const id of row) {
      const w = width(id);
      boxes.set(id, { id, x, y: MARGIN + r * ROW, w, h: NODE_H });
      x += w + GAP;
    }
  });
  return { boxes, back, width: total + 2 * MARGIN + 40, height: MARGIN * 2 + (rows.length - 1) * ROW + NODE_H };
}

// run (optional): {visited: Set, taken: Set of "from→to", current, failed: Set, attempts: {}}
export function drawGraph(definition, run = null) {
  const { boxes, back, width, height } = layout(definition);
  const svg = el("svg", {
    viewBox: `0 0 ${width} ${height}`,
    width,
    class: "graph",
    role: "img",
    "aria-label": `graph of ${definition.flowId}`,
  });
  const defs = el("defs");
  for (const [name, cls] of [["arrow", "arrowhead"], ["arrow-taken", "arrowhead taken"]]) {
    const marker = el("marker", { id: name, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 9, markerHeight: 9, markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" });
    marker.append(el("path", { d: "M0,0 L10,5 L0,10 z", class: cls }));
    defs.append(marker);
  }
  svg.append(defs);

  const siblings = new Map();
  for (const e of definition.edges) (siblings.get(e.from) || siblings.set(e.from, []).get(e.from)).push(e);
  const edgesLayer = el("g", { class: "edges" });
  const labels = el("g", { class: "edge-labels" });
  for (const edge of definition.edges) {
    const a = boxes.get(edge.from);
    const b = boxes.get(edge.to);
    if (!a || !b) continue;
    let d;
    let lx;
    let ly;
    if (back.has(edge) || edge.from === edge.to) {
      // Around the right of everything: down out of the source, across, up, into the target's side.
      const right = width - 18;
      const x1 = a.x + a.w / 2;
      const y1 = a.y + a.h;
      const y2 = b.y + b.h / 2;
      const drop = y1 + 14;
      d = `M${x1},${y1} V${drop - 6} Q${x1},${drop} ${x1 + 6},${drop} H${right - 6} Q${right},${drop} ${right},${drop - 6} V${y2 + 6} Q${right},${y2} ${right - 6},${y2} H${b.x + b.w + 2}`;
      lx = right;
      ly = (drop + y2) / 2;
    } else {
      const x1 = a.x + a.w / 2;
      const y1 = a.y + a.h;
      const x2 = b.x + b.w / 2;
      const y2 = b.y - 2;
      const bend = (y2 - y1) / 2;
      d = `M${x1},${y1} C${x1},${y1 + bend} ${x2},${y2 - bend} ${x2},${y2}`;
      lx = (x1 + x2) / 2;
      ly = (y1 + y2) / 2;
    }
    const taken = run && run.taken.has(`${edge.from}→${edge.to}`);
    const cls = ["edge", edge.hasCondition ? "conditional" : "", back.has(edge) ? "back" : "", taken ? "taken" : ""].join(" ").trim();
    const path = el("path", { d, class: cls, "marker-end": taken ? "url(#arrow-taken)" : "url(#arrow)" });
    const condition = edge.hasCondition ? (edge.condition ? ` if ${edge.condition}` : " (conditional)") : "";
    path.append(el("title", {}, `${edge.from} → ${edge.to}${condition}, priority ${edge.priority}`));
    edgesLayer.append(path);
    const many = siblings.get(edge.from).length > 1;
    const parts = [];
    // The condition's text, cut to fit beside the edge; the whole of it is in the tooltip.
    if (edge.hasCondition) parts.push(edge.condition ? `if ${clip(edge.condition, 28)}` : "if");
    if (many || edge.priority) parts.push(`p${edge.priority}`);
    if (parts.length) {
      const text = parts.join(" ");
      const g = el("g", { class: "edge-label" });
      g.append(el("rect", { x: lx - 4 - 3.3 * text.length, y: ly - 9, width: 8 + 6.6 * text.length, height: 17, rx: 4 }));
      g.append(el("text", { x: lx, y: ly + 4, "text-anchor": "middle" }, text));
      labels.append(g);
    }
  }
  svg.append(edgesLayer, labels);

  const nodes = el("g", { class: "nodes" });
  for (const [id, box] of boxes) {
    const node = definition.nodes[id];
    const cls = ["node"];
    if (id === definition.entry) cls.push("entry");
    if (run) {
      if (run.visited.has(id)) cls.push("visited");
      if (run.failed.has(id)) cls.push("failed");
      if (run.current === id) cls.push("current");
    }
    const g = el("g", { class: cls.join(" "), "data-node": id, transform: `translate(${box.x},${box.y})` });
    g.append(el("title", {}, `${id}${id === definition.entry ? " (entry)" : ""}${node.async ? ", async" : ""}`));
    g.append(el("rect", { width: box.w, height: box.h, rx: 9 }));
    const notes = nodeNotes(node);
    g.append(el("text", { x: box.w / 2, y: notes ? 20 : 28, "text-anchor": "middle", class: "node-id" }, id));
    if (notes) g.append(el("text", { x: box.w / 2, y: 36, "text-anchor": "middle", class: "node-notes" }, notes));
    if (id === definition.entry) g.append(el("text", { x: 0, y: -6, class: "entry-mark" }, "▶ entry"));
    const attempts = run && run.attempts[id];
    if (attempts) {
      const badge = el("g", { class: "attempts", transform: `translate(${box.w - 2},2)` });
      badge.append(el("circle", { r: 10 }));
      badge.append(el("text", { y: 4, "text-anchor": "middle" }, `×${attempts}`));
      badge.append(el("title", {}, `${attempts} attempt${attempts === 1 ? "" : "s"}`));
      g.append(badge);
    }
    nodes.append(g);
  }
  svg.append(nodes);
  return svg;
}

// What a run's timeline says about the graph: nodes it went through, edges it took, failures.
export function pathOf(run, events) {
  const visited = new Set();
  const failed = new Set();
  const taken = new Set();
  let previous = null;
  for (const event of events) {
    if (event.type === "NODE_STARTED" && event.nodeId) {
      visited.add(event.nodeId);
      if (previous && previous !== event.nodeId) taken.add(`${previous}→${event.nodeId}`);
      previous = event.nodeId;
    } else if (event.type === "NODE_FAILED" && event.nodeId) failed.add(event.nodeId);
    else if (event.type === "NODE_FINISHED" && event.nodeId) failed.delete(event.nodeId); // a retry succeeded
  }
  const current = run.status === "RUNNING" || run.status === "WAITING" ? run.currentNodeId : null;
  if (current && previous && previous !== current) taken.add(`${previous}→${current}`);
  return { visited, failed, taken, current, attempts: run.attempts || {} };
}
