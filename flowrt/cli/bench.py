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

LABELS = {
    "stepsPerSecond": "durable steps/s",
    "runsPerSecond": "runs/s",
    "requestsPerSecond": "requests/s",
    "stepP50Ms": "step p50 (ms)",
    "stepP99Ms": "step p99 (ms)",
    "p50Ms": "p50 (ms)",
    "p90Ms": "p90 (ms)",
    "p99Ms": "p99 (ms)",
    "maxMs": "max (ms)",
    "writeTransactionsPerStep": "write transactions/step",
    "rawCommitsPerSecond": "raw step commits/s",
    "engineVsRawPercent": "engine / raw (%)",
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
    token: Annotated[
        Optional[str], typer.Option("--token", envvar="FLOWRT_API_TOKEN", metavar="TOKEN", help="Bearer token.")
    ] = None,
    runs: Annotated[int, typer.Option("--runs", "-n", min=1, metavar="N", help="Runs per measurement.")] = 2000,
    nodes: Annotated[int, typer.Option("--nodes", "-k", min=1, max=100, metavar="N", help="Nodes per run (in-process mode).")] = 5,
    concurrency: Annotated[
        list[int], typer.Option("--concurrency", "-c", min=1, metavar="N", help="Concurrent drivers/clients; repeat to compare.")
    ] = [1],  # noqa: B006 - typer reads the default
    mode: Annotated[
        str, typer.Option("--mode", metavar="MODE", help="In-process: 'drive' (background drivers) or 'tick' (a tick per step).")
    ] = "drive",
    driven: Annotated[
        Optional[bool],
        typer.Option(
            "--driven/--tick",
            help="HTTP: one long-polled start per run (the server's drivers work) or start + ticks. "
            "Default: whichever the server runs (see /health 'driving').",
        ),
    ] = None,
    flow_id: Annotated[str, typer.Option("--flow", metavar="FLOW", help="HTTP: the flow to start.")] = "demo-fraud",
    input_json: Annotated[
        Optional[str], typer.Option("--input", metavar="JSON", help="HTTP: the input JSON for each run.")
    ] = None,
    raw: Annotated[bool, typer.Option("--raw/--no-raw", help="Also measure the raw commit rate.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Measure durable steps/s (in-process) or requests/s (against a server)."""
    from ..bench import ServerUnreachable, bench_engine, bench_http  # the engine: only when measuring
    if mode not in ("drive", "tick"):
        raise typer.BadParameter("must be 'drive' or 'tick'", param_hint="--mode")
    try:
        input_value: Any = None if input_json is None else json.loads(input_json)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"invalid JSON: {exc}", param_hint="--input") from exc
    console = Console(stderr=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="flowrt-bench-") as scratch:
        database = db or f"sqlite:///{Path(scratch) / 'bench.db'}"
        for c in concurrency:
            if not as_json:
                where = f"HTTP {url}" if url else (db or "a temporary SQLite file")
                console.print(f"[dim]measuring {where} at concurrency {c} ...[/dim]")
            if url:
                try:
                    result = bench_http(
                        url, runs=runs, concurrency=c, flow_id=flow_id, input_value=input_value, driven=driven, token=token
                    )
                except ServerUnreachable as exc:
                    raise Unreachable(str(exc)) from exc
            else:
                result = bench_engine(database, runs=runs, nodes=nodes, concurrency=c, mode=mode, raw=raw)
            results.append(result)
    failed = any(result["errors"] for result in results)
    if as_json:
        sys.stdout.write(json.dumps(results if len(results) > 1 else results[0], indent=2) + "\n")
        if failed:
            raise typer.Exit(1)
        return
    table = Table(title=f"flowrt bench: {results[0]['mode']} on {url or results[0]['database']}")
    table.add_column("metric")
    for result in results:
        table.add_column(f"c={result['concurrency']}", justify="right")
    for key, label in LABELS.items():
        if any(result.get(key) is not None for result in results) and key in results[0]:
            table.add_row(label, *[str(result.get(key, "")) for result in results])
    Console().print(table)
    for result in results:
        for error in result["errors"]:
            console.print(f"[red]error at c={result['concurrency']}: {error}[/red]")
    if failed:
        raise typer.Exit(1)  # the figures above are not to be trusted
