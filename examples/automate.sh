#!/usr/bin/env bash
# Drive the approval example from a shell script with nothing but the flowrt CLI and jq:
# start requests, find the waiting ones, decide them, and check every outcome by exit code.
#
# It runs the same scenario twice: on a local SQLite database (no server), and against a
# `flowrt serve` it starts in the background. Run it from anywhere:
#
#     examples/automate.sh
#
# Environment: FLOWRT (the command, default `flowrt`), PORT (the server's port, default 3917).

set -euo pipefail

cd "$(dirname "$0")/.."                    # the repository root, so `examples.approval` imports
read -r -a FLOWRT <<< "${FLOWRT:-flowrt}"  # e.g. FLOWRT="python -m flowrt.cli"
PORT="${PORT:-3917}"
WORK="$(mktemp -d)"
SERVER_PID=""

cleanup() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# Only this script's settings count, not the caller's.
unset DATABASE_URL FLOWRT_URL FLOWRT_API_TOKEN FLOWRT_FLOWS FLOWRT_JSON FLOWRT_WAIT FLOWRT_TENANT

flowrt() { command "${FLOWRT[@]}" "$@"; }  # `command`: not this function again
say() { printf '\n== %s\n' "$*"; }
die() { printf 'automate.sh: FAILED: %s\n' "$*" >&2; exit 1; }

# expect CODE COMMAND...: run COMMAND, fail the script unless it exits with CODE.
expect() {
    local want=$1 got=0
    shift
    "$@" > "$WORK/out" 2> "$WORK/err" || got=$?
    if [[ $got -ne $want ]]; then
        cat "$WORK/out" "$WORK/err" >&2
        die "expected exit $want, got $got from: $*"
    fi
    printf '   exit %d  %s\n' "$got" "$*"
}

scenario() {
    local mode=$1

    say "$mode: start three approval requests (--wait returns once each waits for a decision)"
    for i in 1 2 3; do
        expect 0 flowrt start approval --wait --json \
            --input "{\"requestId\": \"$mode-$i\", \"amount\": $((i * 100)), \"requester\": \"ops\"}"
        [[ "$(jq -r .status "$WORK/out")" == WAITING ]] || die "request $i is not WAITING"
    done

    say "$mode: a request nobody answers escalates when its durable timer fires"
    expect 0 flowrt start approval --wait --json \
        --input "{\"requestId\": \"$mode-late\", \"amount\": 50, \"escalateAfterSeconds\": 1}"
    late=$(jq -r .runId "$WORK/out")
    if [[ $mode == local ]]; then
        sleep 1.2
        flowrt recover > /dev/null  # locally nothing runs in the background: recover fires due timers
    fi
    for _ in $(seq 30); do          # a server's drivers fire it by themselves
        reason=$(flowrt status "$late" --json | jq -r .waitReason)
        [[ $reason == escalated* ]] && break
        sleep 0.3
    done
    [[ $reason == escalated* ]] || die "request $late did not escalate: $reason"
    echo "   $late: $reason"

    say "$mode: find the waiting runs and decide them (approve the 200 request, reject the rest)"
    flowrt runs --status WAITING --flow approval --json \
        | jq -r '.runs[] | "\(.runId) \(.inputJson.amount)"' > "$WORK/waiting"
    [[ $(wc -l < "$WORK/waiting") -eq 4 ]] || die "expected 4 waiting runs, got: $(cat "$WORK/waiting")"
    while read -r run amount; do
        approved=$([[ $amount -eq 200 ]] && echo true || echo false)
        expect 0 flowrt resume "$run" --wait --payload "{\"approved\": $approved}"
    done < "$WORK/waiting"

    say "$mode: every error class has its exit code"
    expect 4 flowrt resume "$late" --payload '{"approved": true}'        # not waiting any more
    expect 3 flowrt status no-such-run                                    # not found
    expect 2 flowrt start approval --input '{"amount": '                  # invalid JSON
    expect 1 flowrt start approval --wait --input '{"amount": -5}'        # the run FAILED

    say "$mode: final statuses"
    flowrt runs --flow approval --json > "$WORK/runs"
    summary=$(jq -c '[.runs[] | .status] | group_by(.) | map({(.[0]): length}) | add' "$WORK/runs")
    approved=$(jq '[.runs[] | select(.stateJson.approved == true)] | length' "$WORK/runs")
    echo "   $summary, $approved approved"
    [[ $summary == '{"COMPLETED":4,"FAILED":1}' && $approved -eq 1 ]] || die "unexpected final statuses"
}

# ---------------------------------------------------------------- 1. local database, no server
export DATABASE_URL="sqlite:///$WORK/local.db" FLOWRT_FLOWS="examples.approval:ALL"
scenario local
unset DATABASE_URL FLOWRT_FLOWS

# ---------------------------------------------------------------- 2. the same against a server
say "server: flowrt serve on port $PORT"
if flowrt flows --url "http://127.0.0.1:$PORT" > /dev/null 2>&1; then
    die "something already serves port $PORT; set PORT to a free port"
fi
# exec: $! is then the server itself, not a subshell, so cleanup's kill reaches it.
(exec "${FLOWRT[@]}" serve --flows examples.approval:ALL --port "$PORT" --db "sqlite:///$WORK/server.db" \
    > "$WORK/server.log" 2>&1) &
SERVER_PID=$!
export FLOWRT_URL="http://127.0.0.1:$PORT"
for _ in $(seq 100); do
    rc=0
    flowrt flows > /dev/null 2>&1 || rc=$?
    [[ $rc -eq 0 ]] && break
    [[ $rc -eq 5 ]] || die "flowrt flows exited $rc while the server starts"  # 5: not reachable yet
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; die "flowrt serve exited"; }
    sleep 0.1
done
scenario server

say "all good"
