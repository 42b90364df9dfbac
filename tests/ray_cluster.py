"""A Ray cluster of several nodes on this machine, for tests/test_ray.py and eval/bench_scale.py:
``ray start`` once per node, each in its own short temp dir, with the cluster's own auth token;
``stop`` ends exactly the processes started for it (never ``ray stop``, which ends every Ray here)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """Nodes of 1 CPU each (``start([resources of node 0 (the head), of node 1, ...])``)."""

    def __init__(self, root: Path, *, pythonpath: Path, object_store_bytes: int = 80_000_000):
        token = Path(root) / "token"
        token.write_text(secrets.token_hex(32))
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
                    "PYTHONPATH": str(pythonpath), "RAY_USAGE_STATS_ENABLED": "0"}
        self.object_store_bytes = object_store_bytes
        self.dirs: list[str] = []
        self.address = f"127.0.0.1:{_free_port()}"

    def _ray_start(self, resources: dict, *args: str) -> None:
        temp = tempfile.mkdtemp(prefix="cr-", dir="/tmp")  # short: Ray's socket paths must stay short
        self.dirs.append(temp)
        cmd = [str(Path(sys.executable).with_name("ray")), "start", f"--temp-dir={temp}", "--num-cpus=1",
               f"--object-store-memory={self.object_store_bytes}", "--disable-usage-stats",
               f"--resources={json.dumps(resources)}", f"--dashboard-agent-listen-port={_free_port()}",
               f"--metrics-export-port={_free_port()}", *args]
        subprocess.run(cmd, env=self.env, check=True, capture_output=True, timeout=300)

    def start(self, nodes: list[dict]) -> LocalCluster:
        port = self.address.split(":")[1]
        try:
            self._ray_start(nodes[0], "--head", f"--port={port}", "--include-dashboard=false",
                            f"--ray-client-server-port={_free_port()}", f"--dashboard-port={_free_port()}")
            for resources in nodes[1:]:
                self._ray_start(resources, f"--address={self.address}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        import psutil

        mine = [p for p in psutil.process_iter(["cmdline"])
                if any(d in arg for arg in (p.info["cmdline"] or []) for d in self.dirs)]
        for p in mine:
            p.terminate()
        _gone, alive = psutil.wait_procs(mine, timeout=15)
        for p in alive:
            p.kill()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)

    def compress_run(self, recipe: Path, out: Path, *extra: str, command: str = "run") -> subprocess.CompletedProcess:
        """``compress run RECIPE --out OUT --ray-address ADDRESS --quiet`` as a user would type it
        (``command="search"``: ``compress search ...``)."""
        cmd = [str(Path(sys.executable).with_name("compress")), command, str(recipe), "--out", str(out),
               "--ray-address", self.address, "--quiet", *extra]
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=1800)
