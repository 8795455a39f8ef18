#!/usr/bin/env python3
"""Where a process's CPU goes, from a perf profile: each sample is put in exactly one category
(kernel sleeping and waking, waking peers, TCP, allocator, copies, JSON, URL parsing, HTTP
libraries, tokio, toolgate's own code), and for the avoidable categories the toolgate function
closest to the leaf is named.

    perf record -e cpu-clock -F 2999 --call-graph dwarf,32768 -p PID -o gw.data -- sleep 6
    perf script -i gw.data -F tid,time,ip,sym,dso > gw.txt
    bench/perf-breakdown.py gw.txt [CPU µs per call during the profile]

docs/performance.md shows its output for the gateway at 2,000 calls/s and at saturation.
"""

import collections
import re
import sys


def samples(path):
    """Stacks (leaf first) of (symbol, dso) from `perf script` output."""
    stack = None
    for line in open(path, errors="replace"):
        if not line.strip():
            if stack is not None:
                yield stack
            stack = None
        elif not line.startswith(("\t", " " * 8)):
            stack = []
        elif stack is not None:
            m = re.match(r"\s*[0-9a-f]+ (.*) \((.*)\)\s*$", line)
            if m:
                stack.append((m.group(1), m.group(2)))
    if stack:
        yield stack


KERNEL_SLEEP = re.compile(r"^(finish_task_switch|__schedule|schedule|do_epoll_wait|ep_poll|futex|__x64_sys_epoll_wait|__x64_sys_futex)")
KERNEL_TCP = re.compile(r"tcp_|sock_|inet_|__sys_recvfrom|__sys_sendto|writev|ip_|skb|__dev_queue|loopback|netif|net_rx")
ALLOC = re.compile(r"^((__GI___libc_)?(malloc|free|realloc|calloc)|_int_(malloc|free|realloc)|malloc_consolidate|tcache|unlink_chunk|cfree)")
HTTP = re.compile(r"^<?(hyper|hyper_util|reqwest|axum|axum_core|http|httparse|tower|tower_http|h2|http_body)[:<]|^<[^>]*as (hyper|axum|tower|http_body)")
TOKIO = re.compile(r"^<?(tokio|tokio_util|futures|futures_util)[:<]|^<[^>]*as (tokio|futures)")


def category(stack):
    names = [f for f, _ in stack]
    kernel = [f for f, d in stack if "kernel" in d]
    if kernel:
        if "sock_def_readable" in kernel or "try_to_wake_up" in kernel:
            return "kernel: waking the process at the other end of a socket"
        if any(KERNEL_SLEEP.match(f) for f in kernel):
            return "kernel: going to sleep and being woken (epoll_wait, context switch)"
        if any(KERNEL_TCP.search(f) for f in kernel):
            return "kernel: TCP send/receive on loopback"
        return "kernel: other"
    if ALLOC.match(names[0]):
        return "user: allocator (glibc malloc/free)"
    if re.search(r"memcpy|memmove|memset", names[0]):
        return "user: memcpy/memmove"
    for f in names:
        if "serde_json" in f[:60]:
            return "user: serde_json (parse, serialise)"
        if f.startswith(("url::", "idna::", "<url::", "<idna::")):
            return "user: URL parsing (url, idna)"
        if HTTP.match(f):
            return "user: HTTP/1 (hyper, reqwest, axum, http)"
        if TOKIO.match(f):
            return "user: tokio runtime, channels, tasks"
        if "toolgate::" in f[:80]:
            return "user: toolgate's own code"
        if re.match(r"^<?(core|alloc|std)[:<]", f):
            continue
        if re.match(r"^<?(bytes|indexmap|hashbrown|arc_swap)", f):
            return "user: bytes, maps, Arc"
    return "user: other (std, core, libc)"


def nearest_toolgate(stack):
    for f, _ in stack:
        if "toolgate::" in f[:120]:
            f = re.sub(r"::\{\{closure\}\}|\{async_fn#0\}|::\{async_block#0\}", "", f)
            return f[:110]
    return "(no toolgate frame: runtime or connection task)"


def main():
    all_samples = [s for s in samples(sys.argv[1]) if s]
    per_call = float(sys.argv[2]) if len(sys.argv) > 2 else None
    n = len(all_samples)
    print(f"{n} samples")
    counts = collections.Counter(category(s) for s in all_samples)
    for name, c in counts.most_common():
        us = f"  {per_call * c / n:5.1f} µs/call" if per_call else ""
        print(f"{100 * c / n:6.1f}%{us}  {name}")
    for name in (
        "user: allocator (glibc malloc/free)",
        "user: memcpy/memmove",
        "user: serde_json (parse, serialise)",
        "user: URL parsing (url, idna)",
    ):
        picked = [s for s in all_samples if category(s) == name]
        print(f"\n{name}, by the nearest toolgate function:")
        for f, c in collections.Counter(map(nearest_toolgate, picked)).most_common(5):
            print(f"  {100 * c / n:5.2f}%  {f}")


if __name__ == "__main__":
    main()
