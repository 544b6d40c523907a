#!/usr/bin/env python3
"""Start-up and footprint (issue 6): time from process start to /readyz answering 200 with a
cold plugin compile cache and with a warm one, the binary's size, and idle RSS with 10^5 keys.

Usage: python3 bench/startup.py   (builds the release binary and the bulk loader first)
Each start-up figure is the median of 5 runs; readiness is polled every millisecond.
"""

import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/billstack")
BULK = os.path.join(ROOT, "target/release/examples/bulk_keys")
RUNS = 5


def build():
    subprocess.run(["cargo", "build", "--quiet", "--release", "--bin", "billstack"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--quiet", "--release", "-p", "billstack-keystore",
                    "--example", "bulk_keys"], cwd=ROOT, check=True)


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ready(port):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        c.request("GET", "/readyz")
        return c.getresponse().status == 200
    except OSError:
        return False


def start(data_dir):
    """Starts the server; returns (process, seconds until /readyz answered 200)."""
    port = free_port()
    env = dict(os.environ, BILLSTACK_LOG="warn",
               BILLSTACK_ADMIN_EMAIL="admin@bench.test", BILLSTACK_ADMIN_PASSWORD="bench-password-1")
    began = time.perf_counter()
    proc = subprocess.Popen([BIN, "--data-dir", data_dir, "serve", "--listen", f"127.0.0.1:{port}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = began + 60
    while not ready(port):
        if proc.poll() is not None or time.perf_counter() > deadline:
            proc.kill()
            sys.exit(f"server did not become ready (exit {proc.poll()})")
        time.sleep(0.001)
    return proc, time.perf_counter() - began


def stop(proc):
    proc.terminate()
    proc.wait(timeout=30)


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    build()
    work = tempfile.mkdtemp()
    try:
        cold, warm = [], []
        for i in range(RUNS):
            data = os.path.join(work, f"startup-{i}")
            # First start: empty data dir (bootstrap account, default plugin compiled and cached).
            proc, first = start(data)
            stop(proc)
            # Cold compile cache: the store exists, the compiled plugin does not.
            shutil.rmtree(os.path.join(data, "plugin-cache"), ignore_errors=True)
            proc, t = start(data)
            cold.append(t)
            stop(proc)
            # Warm: everything in place.
            proc, t = start(data)
            warm.append(t)
            stop(proc)
        keys_dir = os.path.join(work, "keys")
        subprocess.run([BULK, keys_dir, "100000"], check=True, stdout=subprocess.DEVNULL)
        proc, _ = start(keys_dir)  # compiles the plugin once
        stop(proc)
        proc, keys_ready = start(keys_dir)
        time.sleep(2)
        idle = rss_mib(proc.pid)
        stop(proc)
        size = os.path.getsize(BIN) / 2**20
        print(f"start-up to /readyz, median of {RUNS}: cold compile cache {statistics.median(cold)*1000:.0f} ms "
              f"(runs: {', '.join(f'{t*1000:.0f}' for t in cold)}), warm {statistics.median(warm)*1000:.0f} ms "
              f"(runs: {', '.join(f'{t*1000:.0f}' for t in warm)})")
        print(f"binary size: {size:.1f} MiB")
        print(f"with 100,000 keys: ready in {keys_ready*1000:.0f} ms (warm cache), idle RSS {idle:.1f} MiB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
