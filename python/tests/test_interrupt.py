"""Ctrl-C interrupts one long call (a single batch, which no check between batches could reach)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from conftest import DEMO_CONFIG, DEMO_WEIGHTS, IMAGES

CHILD = f"""
import sys, time
import numpy as np
import coca
model = coca.load({str(DEMO_CONFIG)!r}, pretrained={str(DEMO_WEIGHTS)!r})
pixels = np.repeat(model.preprocess([{str(IMAGES / "chelsea.png")!r}]), 128, axis=0)
print("ready", flush=True)
start = time.monotonic()
try:
    # One batch of 128 images x 12 beams, 75 decoding steps: seconds even in release.
    model.generate(pixels, batch_size=128, num_beams=12, num_beam_groups=1, seq_len=76, min_seq_len=75)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(0)
print(f"finished after {{time.monotonic() - start:.2f}} s", flush=True)
"""


def test_ctrl_c_interrupts_one_long_beam_search() -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        child.send_signal(signal.SIGINT)
        sent = time.monotonic()
        line = child.stdout.readline().strip()
        waited = time.monotonic() - sent
        assert line == "interrupted", f"the call was not interrupted: {line!r}"
        assert waited < 1.0, f"KeyboardInterrupt came {waited:.2f} s after SIGINT"
        # The decoding stops at its next step, so the interpreter exits promptly too.
        assert child.wait(timeout=20) == 0
    finally:
        child.kill()
