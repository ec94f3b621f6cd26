#!/usr/bin/env python3
"""Load and fault test of `coca serve`: many clients, slow and half-open ones mixed in, and a SIGTERM under load.

    cargo build --release -p coca-cli
    python3 scripts/bench/load_serve.py --coca target/release/coca --clients 64 --seconds 60

Starts the server on a free loopback port (the demo model unless --model/--pretrained are given). CLIENTS threads
POST a mix of /embed (an image and a text), /caption and /classify (typed classes) with real photos from
fixtures/images/sources for SECONDS; meanwhile SLOW threads dribble their headers a byte at a time and HALF_OPEN
threads open connections that send half a request and wait. The server's resident memory is sampled every 0.5 s.
Then SIGTERM is sent while the clients are still running, and the time until the process exits is measured.

Reports requests/s, p50/p99 latency, errors by kind (503s with Retry-After are the server shedding load on
purpose and are counted apart, and so is what requests met after the SIGTERM), the peak RSS and the RSS after
warm-up, and the shutdown time. Loopback only, bounded in time and connections; standard library only.
"""

import argparse
import base64
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = ["chelsea.png", "astronaut_420.jpg", "coffee.webp", "china.jpg", "flower.jpg", "camera_grey.jpg"]
CLASSES = ["a cat", "a dog", "a person", "a cup of coffee", "a flower", "a building"]


def rss_kib(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coca", default=str(ROOT / "target/release/coca"))
    parser.add_argument("--model", default="assets/demo/coca_demo-tiny.json")
    parser.add_argument("--pretrained", default="assets/demo/coca_demo-tiny.safetensors")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--slow", type=int, default=8, help="clients that send their headers a byte at a time")
    parser.add_argument("--half-open", type=int, default=32, help="connections that send half a request")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--warmup", type=float, default=10, help="seconds before RSS counts as warmed up")
    parser.add_argument("--server-arg", action="append", default=[], help="extra `coca serve` argument")
    args = parser.parse_args()
    if args.clients > 512 or args.seconds > 600:
        raise SystemExit("error: at most 512 clients and 600 seconds")

    photos = [base64.b64encode((ROOT / "fixtures/images/sources" / p).read_bytes()).decode() for p in PHOTOS]
    cmd = [args.coca, "serve", "--model", args.model, "--pretrained", args.pretrained, "--port", "0",
           "--strategy", "greedy", "--max-length", "12", "--cache-dir", "/tmp/coca-load-cache", *args.server_arg]
    server = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = server.stdout.readline().strip()
    prefix = "coca serve: listening on http://"
    if not line.startswith(prefix):
        server.kill()
        raise SystemExit(f"error: coca serve did not start (first line {line!r})")
    host, port = line[len(prefix):].rsplit(":", 1)
    port = int(port)
    assert host in ("127.0.0.1", "[::1]"), "loopback only"

    lock = threading.Lock()
    latencies, errors, shed = [], {}, [0]
    # What requests met once SIGTERM was sent: finished (200), refused or cut (the server going away).
    after_sigterm = {}
    stop_load = threading.Event()
    terminating = threading.Event()
    started = time.time()

    def request(path, body):
        conn = http.client.HTTPConnection(host, port, timeout=120)
        t = time.time()
        try:
            conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            took = time.time() - t
            with lock:
                if terminating.is_set():
                    key = str(resp.status)
                    after_sigterm[key] = after_sigterm.get(key, 0) + 1
                elif resp.status == 200:
                    latencies.append(took)
                elif resp.status == 503 and resp.getheader("retry-after"):
                    shed[0] += 1
                else:
                    errors[f"{path} {resp.status}"] = errors.get(f"{path} {resp.status}", 0) + 1
        except OSError as e:
            # After SIGTERM, refused or closed connections are the server going away, not errors.
            with lock:
                key = f"{path} {type(e).__name__}"
                table = after_sigterm if terminating.is_set() else errors
                table[key] = table.get(key, 0) + 1
        finally:
            conn.close()

    def client(seed):
        rng = random.Random(seed)
        while not stop_load.is_set():
            if terminating.is_set():
                time.sleep(0.05)  # the server is going away: knock, do not hammer
            kind = rng.random()
            photo = rng.choice(photos)
            if kind < 0.5:
                request("/embed", {"images": [photo], "texts": ["a photo of " + rng.choice(CLASSES)]})
            elif kind < 0.8:
                request("/caption", {"images": [photo]})
            else:
                request("/classify", {"images": [photo], "classes": CLASSES, "templates": "simple"})

    def slow():
        while not stop_load.is_set():
            try:
                with socket.create_connection((host, port), timeout=30) as s:
                    for byte in f"GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode():
                        if stop_load.is_set():
                            break
                        s.sendall(bytes([byte]))
                        time.sleep(0.5)
                    s.recv(4096)
            except OSError:
                time.sleep(0.5)

    def half_open():
        while not stop_load.is_set():
            try:
                with socket.create_connection((host, port), timeout=60) as s:
                    s.sendall(b"POST /embed HTTP/1.1\r\nHost: ")
                    s.recv(1)  # until the server closes it
            except OSError:
                pass
            time.sleep(0.1)

    samples = []

    def sample():
        while server.poll() is None:
            kib = rss_kib(server.pid)
            if kib:
                samples.append((time.time() - started, kib))
            time.sleep(0.5)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.clients)]
    threads += [threading.Thread(target=slow, daemon=True) for _ in range(args.slow)]
    threads += [threading.Thread(target=half_open, daemon=True) for _ in range(args.half_open)]
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for t in threads:
        t.start()
    time.sleep(args.seconds)
    load_seconds = time.time() - started
    with lock:
        done = len(latencies)
        rss_during_load = [kib for s, kib in samples if args.warmup <= s]
    # SIGTERM while every client is still sending; they stop once the server has exited.
    terminating.set()
    t = time.time()
    server.send_signal(signal.SIGTERM)
    try:
        code = server.wait(timeout=120)
    except subprocess.TimeoutExpired:
        server.kill()
        code = "killed after 120 s"
    shutdown = time.time() - t
    stop_load.set()
    for th in threads:
        th.join(timeout=5)

    warm = rss_during_load
    # The highest RSS in each 10 s of the load: flat after warm-up when these stop growing.
    windows = {}
    for s, kib in samples:
        if s <= load_seconds:
            windows[int(s // 10)] = max(windows.get(int(s // 10), 0), kib)
    report = {
        "clients": args.clients, "slow": args.slow, "half_open": args.half_open, "seconds": round(load_seconds, 1),
        "requests": done, "requests_per_s": round(done / load_seconds, 1),
        "p50_ms": round(1000 * percentile(latencies, 50), 1), "p99_ms": round(1000 * percentile(latencies, 99), 1),
        "errors": errors, "shed_503": shed[0], "after_sigterm": after_sigterm,
        "peak_rss_mib": round(max((k for _, k in samples), default=0) / 1024, 1),
        "rss_after_warmup_mib": [round(min(warm, default=0) / 1024, 1), round(max(warm, default=0) / 1024, 1)],
        "rss_mib_per_10s": [round(windows[k] / 1024, 1) for k in sorted(windows)],
        "shutdown_s": round(shutdown, 2), "exit": code,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
