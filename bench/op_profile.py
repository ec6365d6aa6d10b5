"""Sum an op-level chrome trace (from `nscope_bench_forward run --profile` or `torch_baseline.py --profile`)
into self time per operator, and compare two of them side by side.

    python3 bench/op_profile.py nscope.trace [torch.trace]
"""
import json
import sys
from collections import defaultdict


def self_times(path):
    """Self time (µs) and call count per op name: an event's duration minus its direct children's."""
    events = [e for e in json.load(open(path)) if isinstance(e, dict) and e.get("ph") == "X"]
    if isinstance(events, dict):
        events = events.get("traceEvents", [])
    by_thread = defaultdict(list)
    for e in events:
        by_thread[e.get("tid")].append(e)
    total, calls = defaultdict(float), defaultdict(int)
    for evs in by_thread.values():
        evs.sort(key=lambda e: (float(e["ts"]), -float(e["dur"])))
        stack = []  # (end, name, index into child_time)
        child = []
        for e in evs:
            ts, dur = float(e["ts"]), float(e["dur"])
            while stack and stack[-1][0] <= ts:
                end, name, i = stack.pop()
                total[name] -= child[i]
            if stack:
                child[stack[-1][2]] += dur
            total[e["name"]] += dur
            calls[e["name"]] += 1
            child.append(0.0)
            stack.append((ts + dur, e["name"], len(child) - 1))
        while stack:
            end, name, i = stack.pop()
            total[name] -= child[i]
    return total, calls


def main():
    runs = [self_times(p) for p in sys.argv[1:]]
    names = sorted(set().union(*(t.keys() for t, _ in runs)), key=lambda n: -max(t.get(n, 0) for t, _ in runs))
    head = "".join(f"{p.split('/')[-1]:>22}" for p in sys.argv[1:])
    print(f"{'op (self ms, calls)':<40}{head}")
    for n in names[:30]:
        cells = "".join(f"{t.get(n, 0) / 1000:14.1f} {c.get(n, 0):6d} " for t, c in runs)
        print(f"{n[:40]:<40}{cells}")
    print(f"{'total':<40}" + "".join(f"{sum(t.values()) / 1000:14.1f} {'':6} " for t, _ in runs))


if __name__ == "__main__":
    main()
