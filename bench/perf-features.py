#!/usr/bin/env python3
"""What the full stack's features cost, from a perf profile of the gateway: the share of the
samples (and µs per call) on each of its threads, and of each feature's code, a sample counted
in every feature one of its frames belongs to (so the feature rows overlap and do not add up).

    perf record -e cpu-clock -F 1999 --call-graph dwarf,16384 -p PID -o gw.data -- sleep 4
    perf script -i gw.data -F comm,tid,time,ip,sym,dso > gw.txt
    bench/perf-features.py gw.txt [CPU µs per call during the profile]

docs/performance.md quotes its output for `--stack full` at saturation.
"""

import collections
import re
import sys

FEATURES = [
    ("authorization (the gateway's stage)", r"toolgate::gateway::authz"),
    ("  of it the Cedar decision", r"toolgate::policy::"),
    ("  of it Cedar itself", r"cedar_policy"),
    ("authentication", r"toolgate::auth::"),
    ("audit: any of its code", r"toolgate::audit::"),
    ("  the event at the start of a call", r"audit_begin"),
    ("  the event at its end (with its JSON)", r"audit_end"),
    ("  digests of arguments and results", r"audit::redact::digest"),
    ("  the journal", r"audit::journal"),
    ("  SQLite (its driver and library)", r"sqlite3|sqlx"),
    ("tracing: toolgate's span code", r"toolgate::telemetry::"),
    ("  the OpenTelemetry SDK and exporter", r"opentelemetry"),
    ("metrics", r"toolgate::metrics|metrics::|metrics_exporter"),
]


def samples(path):
    """(thread name, [frames, leaf first]) per sample of `perf script -F comm,tid,...` output."""
    thread, stack = None, None
    for line in open(path, errors="replace"):
        if not line.strip():
            if stack is not None:
                yield thread, stack
            stack = None
        elif not line.startswith(("\t", " " * 8)):
            thread, stack = line.split()[0], []
        elif stack is not None:
            m = re.match(r"\s*[0-9a-f]+ (.*?)(\s+\(.*\))?\s*$", line)
            if m:
                stack.append(m.group(1))
    if stack:
        yield thread, stack


def main():
    path = sys.argv[1]
    per_call = float(sys.argv[2]) if len(sys.argv) > 2 else None
    patterns = [(name, re.compile(p)) for name, p in FEATURES]
    total = 0
    threads = collections.Counter()
    features = collections.Counter()
    where = collections.defaultdict(collections.Counter)
    for thread, stack in samples(path):
        total += 1
        threads[thread] += 1
        text = "\n".join(stack)
        for name, pattern in patterns:
            if pattern.search(text):
                features[name] += 1
                where[name][thread] += 1
    if not total:
        sys.exit("no samples")

    def share(n):
        cost = f"  {per_call * n / total:5.1f} µs/call" if per_call else ""
        return f"{100 * n / total:5.1f} %{cost}"

    print(f"{total} samples\n\nby thread:")
    for thread, n in threads.most_common():
        print(f"  {share(n)}  {thread}")
    print("\nby feature (a sample in every feature it passes through):")
    for name, _ in FEATURES:
        n = features[name]
        on = ", ".join(f"{t} {c}" for t, c in where[name].most_common(3))
        print(f"  {share(n)}  {name}" + (f"  [{on}]" if n else ""))


if __name__ == "__main__":
    main()
