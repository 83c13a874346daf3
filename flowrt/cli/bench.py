"""`flowrt bench`: size a setup by measuring it (see docs/performance.md)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import Unreachable

MODES = ("drive", "tick", "until", "tick-async", "until-async", "recover")  # flowrt.bench.MODES, without importing the engine here

ENGINE_LABELS = {
    "stepsPerSecond": "durable steps/s",
    "runsPerSecond": "runs/s",
    "stepP50Ms": "step p50 ms",
    "stepP99Ms": "step p99 ms",
    "writeTransactionsPerStep": "write tx/step",
    "writeTransactionsPerRun": "write tx/run",
    "stepsPerTransaction": "steps/tx",
    "rawCommitsPerSecondAtC1": "raw commits/s c=1",
    "rawCommitsPerSecond": "raw commits/s same c",
    "engineVsRawAtC1": "engine/raw c=1",
    "engineVsRaw": "engine/raw same c",
    "driveRunsPerSecond": "drive runs/s",
    "recoveryVsDrive": "recover/drive",
    "completed": "runs finished",
}
HTTP_LABELS = {
    "requestsPerSecond": "requests/s",
    "runsPerSecond": "runs/s",
    "p50Ms": "p50 (ms)",
    "p90Ms": "p90 (ms)",
    "p99Ms": "p99 (ms)",
    "maxMs": "max (ms)",
}
COMPARE_LABELS = {
    "requestsPerSecondA": "A requests/s",
    "requestsPerSecondB": "B requests/s",
    "requestsRatio": "requests/s A / B (x)",
    "runsPerSecondA": "A runs/s",
    "runsPerSecondB": "B runs/s",
    "runsRatio": "runs/s A / B (x)",
    "p99MsA": "A p99 (ms)",
    "p99MsB": "B p99 (ms)",
}


def bench(
    db: Annotated[
        Optional[str],
        typer.Option(
            "--db",
            envvar="FLOWRT_BENCH_DB",
            metavar="URL",
            help="Database for in-process mode. Default: a temporary SQLite file, deleted afterwards "
            "(bench never uses DATABASE_URL by itself). Its runs are deleted when it is done.",
        ),
    ] = None,
    url: Annotated[
        Optional[str],
        typer.Option("--url", envvar="FLOWRT_URL", metavar="URL", help="Benchmark a running server instead."),
    ] = None,
    compare: Annotated[
        Optional[str],
        typer.Option(
            "--compare",
            metavar="URL",
            help="HTTP: also a second server (e.g. the reference runtime), the same client alternating "
            "A B A B; reports the ratios A/B.",
        ),
    ] = None,
    rounds: Annotated[int, typer.Option("--rounds", min=1, metavar="N", help="HTTP --compare: A B pairs per concurrency.")] = 2,
    token: Annotated[
        Optional[str], typer.Option("--token", envvar="FLOWRT_API_TOKEN", metavar="TOKEN", help="Bearer token.")
    ] = None,
    runs: Annotated[int, typer.Option("--runs", "-n", min=1, metavar="N", help="Runs per measurement.")] = 2000,
    nodes: Annotated[int, typer.Option("--nodes", "-k", min=1, max=100, metavar="N", help="Nodes per run (in-process mode).")] = 5,
    concurrency: Annotated[
        list[int],
        typer.Option("--concurrency", "-c", min=1, metavar="N", help="Threads or loop tasks (in-process) or clients (HTTP); repeat to compare."),
    ] = [1],  # noqa: B006 - typer reads the default
    mode: Annotated[
        list[str],
        typer.Option(
            "--mode",
            metavar="MODE",
            help="In-process, repeatable: 'drive' (start + a driver's drive_next), 'tick' (start + a tick per step), "
            "'until' (start + run_until_blocked), 'tick-async' / 'until-async' (the same as tasks on an event loop, "
            "async handlers: an asyncio app's path), 'recover' (a backlog of un-driven runs, continued by recover()).",
        ),
    ] = ["drive"],  # noqa: B006
    driven: Annotated[
        Optional[bool],
        typer.Option(
            "--driven/--tick",
            help="HTTP: one long-polled start per run (the server moves the run) or start + ticks. "
            "Default: whichever the server runs (see /health 'driving'). With --compare, for --url only.",
        ),
    ] = None,
    flow_id: Annotated[str, typer.Option("--flow", metavar="FLOW", help="HTTP: the flow to start.")] = "demo-fraud",
    input_json: Annotated[
        Optional[str], typer.Option("--input", metavar="JSON", help="HTTP: the input JSON for each run.")
    ] = None,
    warmup: Annotated[
        Optional[int], typer.Option("--warmup", min=0, metavar="N", help="HTTP: unmeasured runs first. Default: n/10, at most 100.")
    ] = None,
    raw: Annotated[bool, typer.Option("--raw/--no-raw", help="Also measure the raw commit rate.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Measure durable steps/s (in-process) or requests/s (against a server)."""
    from ..bench import ServerUnreachable, bench_engine, bench_http, bench_recovery, compare_http  # only when measuring

    for each in mode:
        if each not in MODES:
            raise typer.BadParameter(f"{each!r}: must be one of {', '.join(MODES)}", param_hint="--mode")
    if compare and not url:
        raise typer.BadParameter("--compare needs --url (the first server)", param_hint="--compare")
    try:
        input_value: Any = None if input_json is None else json.loads(input_json)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"invalid JSON: {exc}", param_hint="--input") from exc
    console = Console(stderr=True)
    warm = min(100, runs // 10) if warmup is None else warmup
    results = []
    with tempfile.TemporaryDirectory(prefix="flowrt-bench-") as scratch:
        database = db or f"sqlite:///{Path(scratch) / 'bench.db'}"
        modes: list[str] = ["http"] if url else list(dict.fromkeys(mode))
        for each in modes:
            for c in concurrency:
                if not as_json:
                    where = f"{url}" + (f" vs {compare}" if compare else "") if url else (db or "a temporary SQLite file")
                    console.print(f"[dim]measuring {each} on {where} at concurrency {c} ...[/dim]")
                options: dict[str, Any] = dict(runs=runs, concurrency=c, flow_id=flow_id, input_value=input_value, token=token)
                try:
                    if url and compare:
                        result = compare_http(url, compare, rounds=rounds, driven=driven, warmup=warm, **options)
                    elif url:
                        result = bench_http(url, driven=driven, warmup=warm, **options)
                    elif each == "recover":
                        result = bench_recovery(database, runs=runs, nodes=nodes, concurrency=c)
                    else:
                        result = bench_engine(database, runs=runs, nodes=nodes, concurrency=c, mode=each, raw=raw)
                except ServerUnreachable as exc:
                    raise Unreachable(str(exc)) from exc
                results.append(result)
    failed = any(result["errors"] for result in results)
    if as_json:
        sys.stdout.write(json.dumps(results if len(results) > 1 else results[0], indent=2) + "\n")
        if failed:
            raise typer.Exit(1)
        return
    _print_tables(results, url or results[0].get("database", ""))
    for result in results:
        for error in result["errors"]:
            console.print(f"[red]error in {result['mode']} at c={result['concurrency']}: {error}[/red]")
    if failed:
        raise typer.Exit(1)  # the figures above are not to be trusted


def _labels(mode: str) -> dict[str, str]:
    if mode == "http/compare":
        return COMPARE_LABELS
    return HTTP_LABELS if mode.startswith("http/") else ENGINE_LABELS


def _print_tables(results: list[dict[str, Any]], where: str) -> None:
    """One table per mode, a column per concurrency."""
    modes: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        modes.setdefault(result["mode"], []).append(result)
    out = Console()
    for mode, group in modes.items():
        first = group[0]
        if mode == "http/compare":
            title = f"A = {first['url']} ({first['modeA']}) vs B = {first['compare']} ({first['modeB']})"
        else:
            title = f"flowrt bench: {mode} on {where}"
        table = Table(title=title)
        table.add_column("metric", no_wrap=True)
        for result in group:
            table.add_column(f"c={result['concurrency']}", justify="right")
        for key, label in _labels(mode).items():
            if any(result.get(key) is not None for result in group):
                table.add_row(label, *["" if result.get(key) is None else str(result[key]) for result in group])
        out.print(table)
    engine_modes = [mode for mode in modes if not mode.startswith("http/")]
    if engine_modes:
        legend = []
        if any(mode != "recover" for mode in engine_modes):
            legend.append(
                "Each engine mode starts its runs (start(keep_lease=True), 1 write) and steps them in the timed loop"
                + (" (the -async modes: as tasks on one event loop)" if any(m.endswith("-async") for m in engine_modes) else "")
                + "."
            )
        legend.append(
            "write tx/step: every write transaction except those that held only starts; write tx/run: all of them. "
            "steps/tx: steps per group-commit transaction. raw: one bare step transaction per commit, same "
            "database, by 1 thread and by as many as the engine had; engine/raw compares durable steps/s with it."
        )
        if "recover" in engine_modes:
            legend.append(
                "recover: runs started before a restart, continued by recover(); drive runs/s: drive mode of the "
                "same flow, measured next."
            )
        out.print("[dim]" + " ".join(legend) + "[/dim]")
