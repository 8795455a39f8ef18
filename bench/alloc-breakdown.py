#!/usr/bin/env python3
"""Allocations per proxied call, by stage, from a heaptrack recording of the gateway.

Run the gateway under heaptrack through a wrapper given to the benchmark as `--toolgate`, fold
the recording by allocation count, then:

    cat > /tmp/heaptracked <<'EOF'
    #!/bin/sh
    exec heaptrack -o /tmp/toolgate-heap.$$ /path/to/target/release/toolgate "$@"
    EOF
    chmod +x /tmp/heaptracked
    target/release/toolgate-bench --stack full --only saturation --toolgate /tmp/heaptracked
    heaptrack_print /tmp/toolgate-heap.PID.zst --flamegraph-cost-type allocations -F folded.txt
    bench/alloc-breakdown.py folded.txt

Calls are counted by an allocation made exactly once per forwarded request (the upstream
request's message); what the gateway allocated while starting is left out. Each stack goes
to the first stage in the list below that it passes through. Counts do not depend on how
fast the machine is, so two builds can be compared on any day.
"""

import collections
import sys

OTHER = "other (runtime, libraries outside a call)"

# The call's one allocation in `jsonrpc::Message::request`, as the innermost toolgate frame.
CALL_MARKER = "jsonrpc::Message::request"

STAGES = [
    ("start-up", ["toolgate::main"]),
    ("audit store writer (sqlx, SQLite)", ["audit::sink::store", "sqlx_sqlite", "sqlite3"]),
    ("OTLP export (its own thread)", ["BatchSpanProcessor", "opentelemetry_otlp"]),
    (
        "upstream POST (its client and connection)",
        [
            "Http::send_post",
            "Http::request",
            "Http::post",
            "reqwest::",
            "hyper_util::client",
            "hyper::client::",
            "dispatch::Client",
        ],
    ),
    ("Cedar decision", ["Policies::decide", "policy::verdict", "cedar_request", "note_decision"]),
    ("spans (made and ended)", ["telemetry::"]),
    (
        "audit event",
        ["audit::event", "gateway::audit", "audit::redact", "audit::journal", "Auditor"],
    ),
    (
        "HTTP server: connection, routing, middleware, the POST handler (its JSON parse too)",
        ["axum::", "tower::", "TowerToHyper", "hyper::proto::h1", "hyper::server"],
    ),
    ("the request's own task: dispatch, forwarding, the answer", ["toolgate::"]),
]


def main(path):
    by_stage = collections.Counter()
    calls = 0
    for line in open(path, errors="replace"):
        stack, _, count = line.rstrip().rpartition(" ")
        if not count.isdigit():
            continue
        count = int(count)
        frames = stack.split(";")
        innermost = next((f for f in reversed(frames) if "toolgate::" in f), "")
        if CALL_MARKER in innermost and "toolgate::main" not in stack:
            calls += count
        stage = next(
            (name for name, marks in STAGES if any(m in stack for m in marks)),
            OTHER,
        )
        by_stage[stage] += count
    if calls == 0:
        sys.exit("no forwarded calls in this recording")
    print(f"{calls} calls")
    print("| stage | allocations per call |")
    print("|---|---:|")
    total = 0
    for name in [n for n, _ in STAGES[1:]] + [OTHER]:
        total += by_stage[name]
        print(f"| {name} | {by_stage[name] / calls:.1f} |")
    print(f"| **total** | **{total / calls:.1f}** |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
