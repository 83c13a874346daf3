"""``flowrt graph``: a flow's shape in the terminal, and a run's path through it.

The document (``--json``) is the flow's entry from ``GET /v1/flows``; with ``--run`` it
also has ``run`` (status, current node) and ``visited`` (each node's attempts and
outcome, from the timeline). Rendering works from that document alone, so local and
remote print the same.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from ..errors import FlowNotFound
from .backends import Json, version_key


def graph_doc(
    registered: list[Json], flow_id: str, version: str | None, *, run: Json | None = None, events: list[Json] | None = None
) -> Json:
    """The flow's definition (and, with a run, its path), or FLOW_NOT_FOUND naming what is registered."""
    candidates = [f for f in registered if f.get("flowId") == flow_id]
    if version is not None:
        candidates = [f for f in candidates if f.get("version") == version]
    if not candidates:
        names = ", ".join(sorted({f"{f.get('flowId')}@{f.get('version')}" for f in registered})) or "none"
        what = flow_id if version is None else f"{flow_id}@{version}"
        where = f" (run {run['runId']})" if run else ""
        raise FlowNotFound(f"flow {what}{where} is not registered here; registered: {names}")
    chosen = max(candidates, key=lambda f: version_key(str(f.get("version"))))
    doc: Json = {"flowId": chosen["flowId"], "version": chosen["version"], "definitionJson": chosen.get("definitionJson") or {}}
    if run is not None:
        doc["run"] = {k: run.get(k) for k in ("runId", "status", "currentNodeId", "waitReason")}
        doc["visited"] = visited(events or [])
    return doc


def visited(events: list[Json]) -> list[Json]:
    """Each node the run reached, in first-visit order: attempts, and how its last attempt ended."""
    seen: dict[str, Json] = {}
    for event in events:
        node = event.get("nodeId")
        if not node:
            continue
        entry = seen.setdefault(node, {"nodeId": node, "attempts": 0, "outcome": "started"})
        kind = event["type"]
        if kind == "NODE_STARTED":
            entry["attempts"] = max(entry["attempts"] + 1, int(event.get("attempt") or 0))
            entry["outcome"] = "started"
        elif kind == "NODE_FINISHED":
            entry["outcome"] = "finished"
        elif kind == "NODE_FAILED":
            entry["outcome"] = "failed"
        elif kind == "RUN_WAITING":
            entry["outcome"] = "waited"
    return list(seen.values())


def _node_marks(spec: Json) -> str:
    marks = []
    retry = spec.get("retry")
    if retry and retry.get("maxAttempts", 1) > 1:
        delays = _retry_delays(retry.get("backoff"), retry.get("baseDelayMs"), retry.get("maxDelayMs"))
        marks.append(f"retry ×{retry['maxAttempts']} {retry.get('backoff') or ''} {delays}".replace("  ", " ").strip())
    if spec.get("timeoutMs"):
        marks.append(f"timeout {spec['timeoutMs']} ms")
    if spec.get("hasIdempotencyKey"):
        marks.append("idempotent")
    if spec.get("waits"):
        marks.append("waits")
    return " · ".join(marks)


def _retry_delays(backoff: str | None, base: int | None, cap: int | None) -> str:
    """The pause between tries as people say it: "100–2000 ms", "from 200 ms" (doubling with no
    cap), "200 ms" (fixed), "at once"."""
    if base is None:
        return ""
    if not base:
        return "at once"
    if backoff != "exponential" or cap == base:
        return f"{base if cap is None else min(base, cap)} ms"
    return f"from {base} ms" if cap is None else f"{base}–{cap} ms"


OUTCOME = {"finished": ("✓", "green"), "failed": ("✗", "red"), "waited": ("⏸", "yellow"), "started": ("…", "blue")}


def render(doc: Json) -> RenderableType:
    definition: Json = doc.get("definitionJson") or {}
    nodes: dict[str, Any] = definition.get("nodes") or {}
    edges: list[Json] = definition.get("edges") or []
    entry = definition.get("entry")
    run = doc.get("run")
    path = {v["nodeId"]: v for v in doc.get("visited") or []}
    title = Text.assemble((f"{doc['flowId']}@{doc['version']}", "bold"))
    if definition.get("description"):
        title.append(f"  {definition['description']}", style="dim")
    parts: list[RenderableType] = [title]
    if run:
        parts.append(Text.assemble(("run ", "dim"), (str(run["runId"]), "bold"), "  ", str(run.get("status")),
                                   f" at {run['currentNodeId']}" if run.get("currentNodeId") else ""))
    parts.append(Text.assemble(("entry ", "dim"), (str(entry), "bold")))
    outgoing: dict[str, list[Json]] = {}
    for e in edges:
        outgoing.setdefault(str(e.get("from")), []).append(e)
    order = _walk_order(entry, list(nodes), outgoing)
    for node_id in order:
        spec = nodes.get(node_id) or {}
        line = Text()
        if run:
            mark, style = OUTCOME.get(path[node_id]["outcome"], ("·", "")) if node_id in path else (" ", "")
            line.append(f"{mark} ", style=style)
        line.append(node_id, style="bold")
        if run and run.get("currentNodeId") == node_id and run.get("status") in ("RUNNING", "WAITING", "FAILED"):
            line.append(f"  ◀ {str(run['status']).lower()} here", style="bold yellow")
        if run and node_id in path and path[node_id]["attempts"] > 1:
            line.append(f"  ({path[node_id]['attempts']} attempts)", style="dim")
        marks = _node_marks(spec)
        if marks:
            line.append(f"  {marks}", style="dim")
        parts.append(line)
        out = sorted(outgoing.get(node_id, []), key=lambda e: -float(e.get("priority") or 0))
        if not out:
            parts.append(Padding(Text("(end: the run completes here)", style="dim"), (0, 0, 0, 4)))
        grid = Table.grid(padding=(0, 2))
        grid.add_column(no_wrap=True)
        grid.add_column(no_wrap=True, style="dim")
        for e in out:
            target = Text.assemble("→ ", (str(e.get("to")), "bold" if str(e.get("to")) in path else ""))
            cond = f"if {e.get('condition') or 'condition'}" if e.get("hasCondition") else "always"
            grid.add_row(target, f"priority {e.get('priority', 0)} · {cond}" if "hasCondition" in e else f"priority {e.get('priority', 0)}")
        if out:
            parts.append(Padding(grid, (0, 0, 0, 4)))
    parts.append(Text("edges are tried highest priority first; the first whose condition holds is taken", style="dim"))
    return Group(*parts)


def _walk_order(entry: Any, declared: list[str], outgoing: dict[str, list[Json]]) -> list[str]:
    """Nodes breadth-first from the entry (the order a reader follows), then any unreachable ones."""
    order: list[str] = []
    queue = [str(entry)] if entry in declared else []
    while queue:
        node = queue.pop(0)
        if node in order:
            continue
        order.append(node)
        for e in sorted(outgoing.get(node, []), key=lambda e: -float(e.get("priority") or 0)):
            target = str(e.get("to"))
            if target not in order:
                queue.append(target)
    return order + [n for n in declared if n not in order]
