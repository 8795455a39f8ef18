#!/usr/bin/env python3
"""Who held the CPU, and who waited for it, from `perf sched timehist`: per thread, how long
it waited once woken (the scheduling delay) and how long it ran at a time. A long run of a
background thread (SQLite's worker, the OTLP exporter) on the CPU the gateway shares is what
a call that arrives meanwhile waits behind.

    perf sched record -C 1 -o sched.data -- sleep 40      # CPU 1: the gateway's in latency runs
    perf sched timehist -i sched.data > sched.txt
    bench/sched-runs.py sched.txt [PID ...]               # only these processes' threads

docs/performance.md quotes its output for `--stack full --only latency`.
"""

import collections
import re
import sys


def percentile(values, q):
    return values[min(len(values) - 1, int(len(values) * q))]


def main():
    path, pids = sys.argv[1], set(sys.argv[2:])
    delays = collections.defaultdict(list)
    runs = collections.defaultdict(list)
    for line in open(path, errors="replace"):
        fields = line.split()
        # time, cpu, task[tid/pid], wait time, scheduling delay, run time (ms)
        if len(fields) < 6 or not fields[0][0].isdigit():
            continue
        m = re.match(r"(.*)\[(\d+)(?:/(\d+))?\]$", fields[2])
        if not m:
            continue
        name, tid, pid = m.group(1), m.group(2), m.group(3) or m.group(2)
        if pids and pid not in pids:
            continue
        try:
            delay, run = float(fields[4]), float(fields[5])
        except ValueError:
            continue
        key = f"{name} [{pid}]"
        delays[key].append(delay)
        runs[key].append(run)
    print("thread [pid]: scheduling delay p99 / p99.9 / max; runs p99 / max; runs ≥ 0.5 ms and ≥ 1 ms")
    for key in sorted(runs, key=lambda k: -sum(runs[k]))[:15]:
        d, r = sorted(delays[key]), sorted(runs[key])
        long = [x for x in r if x >= 0.5]
        print(
            f"{key:36} delay {percentile(d, 0.99):.3f} / {percentile(d, 0.999):.3f} / {d[-1]:.3f} ms;"
            f" runs {percentile(r, 0.99):.2f} / {r[-1]:.2f} ms; {len(long)} runs ≥ 0.5 ms"
            f" ({sum(long):.0f} ms), {sum(x >= 1 for x in r)} ≥ 1 ms; {sum(r):.0f} ms on the CPU"
        )


if __name__ == "__main__":
    main()
