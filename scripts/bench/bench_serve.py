#!/usr/bin/env python3
"""Throughput of `coca serve` under concurrent clients, with and without merging requests into shared batches.

    cargo build --release -p coca-cli
    python3 scripts/bench/bench_serve.py --model coca_ViT-B-32 --pretrained CHECKPOINT --clients 8 --threads 2

Starts the server twice on a free port: once with `--max-batch 1` (every request is its own forward pass) and
once with the default merging. Each time, CLIENTS threads POST one image each to /embed at the same moment,
ROUNDS times. Prints the best wall time per round, images per second, the forward passes the server counted,
and the speed-up from merging. open_clip has no server, so there is no open_clip column. Standard library only.
"""

import argparse
import base64
import http.client
import json
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def start(args, max_batch):
    cmd = [args.coca_bin, "--threads", str(args.threads), "serve", "--model", args.model,
           "--pretrained", args.pretrained, "--port", "0", "--max-batch", str(max_batch)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline().strip()
    prefix = "coca serve: listening on http://"
    if not line.startswith(prefix):
        proc.kill()
        raise SystemExit(f"error: coca serve did not start (first line {line!r})")
    host, port = line[len(prefix):].rsplit(":", 1)
    return proc, host, int(port)


def post(host, port, path, body):
    conn = http.client.HTTPConnection(host, port, timeout=600)
    conn.request("POST", path, body, {"content-type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise SystemExit(f"error: {path} answered {resp.status}: {data[:200]!r}")
    return json.loads(data)


def health(host, port):
    conn = http.client.HTTPConnection(host, port, timeout=60)
    conn.request("GET", "/health")
    return json.loads(conn.getresponse().read())


def measure(args, max_batch, body):
    proc, host, port = start(args, max_batch)
    try:
        post(host, port, "/embed", body)  # warm-up
        before = health(host, port)["forward_passes"]
        best = float("inf")
        for _ in range(args.rounds):
            threads = [threading.Thread(target=post, args=(host, port, "/embed", body))
                       for _ in range(args.clients)]
            t = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            best = min(best, time.perf_counter() - t)
        passes = health(host, port)["forward_passes"] - before
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return best, passes


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="coca_ViT-B-32")
    parser.add_argument("--pretrained", required=True)
    parser.add_argument("--image", default=str(ROOT / "fixtures/images/sources/chelsea.png"))
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--coca-bin", default=str(ROOT / "target/release/coca"))
    args = parser.parse_args()
    if not Path(args.coca_bin).exists():
        raise SystemExit(f"error: {args.coca_bin} not found; run `cargo build --release -p coca-cli` first")
    body = json.dumps({"images": [base64.b64encode(Path(args.image).read_bytes()).decode()]})

    print(f"{args.model}, {args.clients} concurrent clients x 1 image, {args.threads} threads, "
          f"best of {args.rounds} rounds")
    results = {}
    for label, max_batch in (("one pass per request (--max-batch 1)", 1), ("merged (default)", 32)):
        seconds, passes = measure(args, max_batch, body)
        results[label] = seconds
        print(f"  {label:40s} {seconds:7.3f} s  {args.clients / seconds:6.1f} img/s  "
              f"{passes} forward passes for {args.rounds * args.clients} requests")
    one, merged = results.values()
    print(f"merging speed-up: {one / merged:.2f}x")


if __name__ == "__main__":
    main()
