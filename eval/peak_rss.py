"""Run a command and report the peak resident memory of its whole process tree.

Every ``--interval`` seconds the RSS of the command and all its descendants (e.g. the memory
probe's subprocesses) is summed; the largest sum, the largest single process and the wall time
are printed (and written as JSON with ``--json``). Needs psutil.

    python eval/peak_rss.py --json runs/streaming/peak_rss.json -- compress run eval/streaming.yaml
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def main() -> int:
    import psutil

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--interval", type=float, default=0.2, help="seconds between samples")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("give a command after --")
    t0 = time.perf_counter()
    proc = subprocess.Popen(command)
    root = psutil.Process(proc.pid)
    peak_tree = peak_single = samples = 0
    while proc.poll() is None:
        total = 0
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for p in procs:
            try:
                rss = p.memory_info().rss
            except psutil.NoSuchProcess:
                continue
            total += rss
            peak_single = max(peak_single, rss)
        peak_tree = max(peak_tree, total)
        samples += 1
        time.sleep(args.interval)
    rc = proc.wait()
    out = {"command": " ".join(command), "exit_code": rc, "wall_s": round(time.perf_counter() - t0, 1),
           "peak_tree_rss_bytes": peak_tree, "peak_single_process_rss_bytes": peak_single,
           "samples": samples, "interval_s": args.interval}
    print(f"peak RSS of the process tree {peak_tree / 2**30:.2f} GiB (largest single process "
          f"{peak_single / 2**30:.2f} GiB), wall {out['wall_s']:.0f} s, exit {rc}", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return rc


if __name__ == "__main__":
    sys.exit(main())
