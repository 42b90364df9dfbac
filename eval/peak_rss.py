"""Run a command (or watch a running one) and report the peak resident memory of its process tree.

Every ``--interval`` seconds the RSS of the command and all its descendants (e.g. the memory
probe's subprocesses) is summed; the largest sum, the largest single process and the wall time
are printed (and written as JSON with ``--json``). RSS counts a shared library's pages once per
process that maps it (``import torch`` alone maps ~0.7 GB), so ``--pss`` also sums the
proportional set size, which splits shared pages between the processes (slower: reads smaps).
Needs psutil.

    python eval/peak_rss.py --pss --json runs/streaming/peak_rss.json -- compress run eval/streaming.yaml
    python eval/peak_rss.py --pss --pid 1234      # watch a process tree that is already running
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
    ap.add_argument("--pss", action="store_true", help="also sum the proportional set size")
    ap.add_argument("--pid", type=int, default=None, help="watch this running process tree instead")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command and args.pid is None:
        ap.error("give a command after --, or --pid")
    t0 = time.perf_counter()
    proc = subprocess.Popen(command) if args.pid is None else None
    root = psutil.Process(proc.pid if proc is not None else args.pid)
    peak_tree = peak_single = peak_pss = samples = 0
    while (proc.poll() is None) if proc is not None else root.is_running():
        total = pss = 0
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for p in procs:
            try:
                info = p.memory_full_info() if args.pss else p.memory_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            total += info.rss
            pss += getattr(info, "pss", 0)
            peak_single = max(peak_single, info.rss)
        peak_tree, peak_pss = max(peak_tree, total), max(peak_pss, pss)
        samples += 1
        time.sleep(args.interval)
    rc = proc.wait() if proc is not None else None
    out = {"command": " ".join(command) or f"pid {args.pid}", "exit_code": rc,
           "wall_s": round(time.perf_counter() - t0, 1), "peak_tree_rss_bytes": peak_tree,
           "peak_single_process_rss_bytes": peak_single, "samples": samples, "interval_s": args.interval}
    if args.pss:
        out["peak_tree_pss_bytes"] = peak_pss
    print(f"peak RSS of the process tree {peak_tree / 2**30:.2f} GiB (largest single process "
          f"{peak_single / 2**30:.2f} GiB" + (f"; PSS sum {peak_pss / 2**30:.2f} GiB" if args.pss else "")
          + f"), wall {out['wall_s']:.0f} s, exit {rc}", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return rc or 0


if __name__ == "__main__":
    sys.exit(main())
