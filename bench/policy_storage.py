#!/usr/bin/env python3
"""What policy uploads leave behind (issue 15): N uploads of distinct large components by one
team, then a reset and a restart; data directory size and server RSS after each phase.

Usage: python3 bench/policy_storage.py BILLSTACK_BINARY [UPLOADS] [MIB]
Each upload is the embedded default plugin (exported with `policy export default`) with a
custom section of MIB MiB appended, distinct per upload, so it compiles and loads like the
default while its bytes differ. Loopback only; bounded by UPLOADS.
"""
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time


def leb128(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def with_custom_section(component, i, mib):
    name = b"padding"
    payload = bytes([i % 256]) * (mib << 20)
    body = leb128(len(name)) + name + payload
    return component + b"\x00" + leb128(len(body)) + body


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def start(binary, data):
    env = dict(os.environ, BILLSTACK_ADMIN_EMAIL="ops@example.com",
               BILLSTACK_ADMIN_PASSWORD="bench-password-1", BILLSTACK_LOG="warn",
               BILLSTACK_PLUGIN_MAX_MIB="64")
    proc = subprocess.Popen([binary, "--data-dir", data, "serve", "--listen", "127.0.0.1:0"],
                            env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        line = proc.stderr.readline()
        if line.startswith("billstack listening on "):
            host = line.split("http://", 1)[1].strip()
            return proc, host
    proc.kill()
    raise SystemExit("the server did not start")


def request(host, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection(host, timeout=600)
    conn.request(method, path, body=body, headers=headers or {})
    res = conn.getresponse()
    data = res.read()
    conn.close()
    return res.status, res.getheader("Set-Cookie"), data


def main():
    binary = sys.argv[1]
    uploads = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    mib = int(sys.argv[3]) if len(sys.argv) > 3 else 31
    with tempfile.TemporaryDirectory() as work:
        data = os.path.join(work, "data")
        exported = os.path.join(work, "default.wasm")
        subprocess.run([binary, "policy", "export", "default", "--output", exported],
                       check=True, stdout=subprocess.DEVNULL)
        component = open(exported, "rb").read()
        proc, host = start(binary, data)
        _, cookie, me = request(host, "POST", "/api/auth/login",
                                json.dumps({"email": "ops@example.com", "password": "bench-password-1"}),
                                {"Content-Type": "application/json"})
        team = json.loads(me)["teams"][0]["id"]
        headers = {"Cookie": cookie.split(";")[0], "Origin": f"http://{host}"}
        for i in range(uploads):
            status, _, body = request(host, "PUT", f"/api/billstack/teams/{team}/policy",
                                      with_custom_section(component, i, mib),
                                      dict(headers, **{"Content-Type": "application/wasm"}))
            if status != 200:
                raise SystemExit(f"upload {i}: {status} {body[:200]}")
        print(f"after {uploads} uploads of {mib} MiB: data dir {du(data) / 2**20:.1f} MiB, "
              f"RSS {rss_kib(proc.pid) / 1024:.1f} MiB")
        status, _, _ = request(host, "DELETE", f"/api/billstack/teams/{team}/policy", None, headers)
        assert status == 200, status
        print(f"after the reset: data dir {du(data) / 2**20:.1f} MiB, RSS {rss_kib(proc.pid) / 1024:.1f} MiB")
        proc.terminate()
        proc.wait()
        proc, _ = start(binary, data)
        print(f"after a restart: data dir {du(data) / 2**20:.1f} MiB, RSS {rss_kib(proc.pid) / 1024:.1f} MiB")
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
