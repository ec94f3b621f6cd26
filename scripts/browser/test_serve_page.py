#!/usr/bin/env python3
"""The page of `coca serve` in a real browser: headless Chromium driven over WebDriver (chromedriver).

Embeds the fixture collection (`coca embed --output-dir`), starts `coca serve --index` on it with the demo model,
opens its page, uploads a fixture image, waits for the caption and checks it equals the API's answer (with the
server's strategy and with beam search picked on the page), types classes and checks the ranking equals
/classify's, compares texts, searches the index by text and by image and checks the results and their thumbnails,
and saves screenshots at desktop and phone width. Standard library only.

Needs Debian's `chromium` and `chromium-driver` (apt-get install -y chromium chromium-driver). Without them it
prints that it skipped and exits 0, unless --require is given.

    python3 scripts/browser/test_serve_page.py --coca target/debug/coca [--screenshots docs] [--require]
"""

import argparse
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGE = os.path.join(ROOT, "fixtures/images/sources/chelsea.png")
MODEL = ["--model", "assets/demo/coca_demo-tiny.json", "--pretrained", "assets/demo/coca_demo-tiny.safetensors"]
CLASSES = ["a cat", "a dog", "a red square"]
COLLECTION = "fixtures/data/folder"
SEARCH = "a tiny photo of coffee"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


class WebDriver:
    """The few WebDriver commands this test needs, over plain HTTP."""

    def __init__(self, url):
        self.url = url
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                                            "--disable-dev-shm-usage"]},
        }}}
        chromium = shutil.which("chromium")
        if chromium:
            caps["capabilities"]["alwaysMatch"]["goog:chromeOptions"]["binary"] = chromium
        self.session = self.call("POST", "/session", caps)["sessionId"]

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"WebDriver {method} {path}: {e.read().decode(errors='replace')}") from None

    def s(self, method, path, body=None):
        return self.call(method, f"/session/{self.session}{path}", body)

    def find(self, css):
        value = self.s("POST", "/element", {"using": "css selector", "value": css})
        return next(iter(value.values()))

    def find_all(self, css):
        return [next(iter(v.values())) for v in
                self.s("POST", "/elements", {"using": "css selector", "value": css})]

    def text(self, element):
        return self.s("GET", f"/element/{element}/text")

    def wait_for(self, css, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = self.find_all(css)
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError(f"{css} did not appear within {timeout} s")

    def screenshot(self, path):
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.s("GET", "/screenshot")))

    def quit(self):
        try:
            self.s("DELETE", "")
        except Exception:
            pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coca", default=os.path.join(ROOT, "target/debug/coca"))
    parser.add_argument("--screenshots", help="folder for serve-page.png and serve-page-phone.png")
    parser.add_argument("--require", action="store_true", help="fail instead of skipping without chromium")
    args = parser.parse_args()
    driver_bin = shutil.which("chromedriver")
    if not driver_bin or not (shutil.which("chromium") or shutil.which("google-chrome")):
        message = "skipped: chromium and chromium-driver are not installed"
        print(message)
        sys.exit(1 if args.require else 0)

    port, driver_port = free_port(), free_port()
    scratch = tempfile.TemporaryDirectory()
    index = os.path.join(scratch.name, "index")
    subprocess.run([args.coca, "embed", *MODEL, "--input-dir", COLLECTION, "--output-dir", index, "--json"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    server = subprocess.Popen([args.coca, "serve", *MODEL, "--strategy", "greedy", "--max-length", "8",
                               "--port", str(port), "--no-cache", "--index", index], cwd=ROOT,
                              stdout=subprocess.PIPE)
    driver = subprocess.Popen([driver_bin, f"--port={driver_port}"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    browser = None
    try:
        line = server.stdout.readline().decode()
        assert "listening on" in line, line
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", driver_port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        browser = WebDriver(f"http://127.0.0.1:{driver_port}")
        browser.s("POST", "/window/rect", {"width": 1200, "height": 1000})
        browser.s("POST", "/url", {"url": base + "/"})

        with open(IMAGE, "rb") as f:
            b64 = base64.b64encode(f.read()).decode()
        want_caption = http("POST", base + "/caption", {"images": [b64]})["captions"][0]["caption"]
        want_labels = [p["class"] for p in
                       http("POST", base + "/classify", {"images": [b64], "classes": CLASSES,
                                                         "top_k": 5})["results"][0]["top_k"]]

        browser.s("POST", f"/element/{browser.find('#files')}/value", {"text": IMAGE})
        browser.wait_for("#preview img")
        browser.s("POST", f"/element/{browser.find('#caption-run')}/click", {})
        got_caption = browser.text(browser.wait_for("#captions .caption")[0])
        assert got_caption == want_caption, f"page caption {got_caption!r} != API {want_caption!r}"
        print(f"caption: {got_caption!r} (equals the API's)")

        want_beam = http("POST", base + "/caption", {"images": [b64], "strategy": "beam"})["captions"][0]["caption"]
        browser.s("POST", f"/element/{browser.find('#strategy option[value=beam]')}/click", {})
        browser.s("POST", "/execute/sync", {"script": "document.getElementById('captions').replaceChildren()",
                                            "args": []})
        browser.s("POST", f"/element/{browser.find('#caption-run')}/click", {})
        got_beam = browser.text(browser.wait_for("#captions .caption")[0])
        assert got_beam == want_beam, f"page beam caption {got_beam!r} != API {want_beam!r}"
        print(f"caption with beam search picked on the page: {got_beam!r} (equals the API's)")

        browser.s("POST", f"/element/{browser.find('#classes')}/value", {"text": "\n".join(CLASSES)})
        browser.s("POST", f"/element/{browser.find('#classify-run')}/click", {})
        items = browser.wait_for("#labels li")
        got_labels = [browser.text(li).rsplit(" (", 1)[0] for li in items]
        assert got_labels == want_labels, f"page ranking {got_labels} != API {want_labels}"
        print(f"labels: {got_labels} (the API's ranking)")

        browser.s("POST", f"/element/{browser.find('#texts')}/value", {"text": "a photo of a cat\na diagram"})
        browser.s("POST", f"/element/{browser.find('#similarity-run')}/click", {})
        assert len(browser.wait_for("#similarities li")) == 2
        print("similarities: 2 texts ranked")

        want_hits = [h["caption"] for h in http("POST", base + "/search", {"text": SEARCH, "top_k": 12})["results"]]
        browser.wait_for("#search-panel:not([hidden])")
        browser.s("POST", f"/element/{browser.find('#search-text')}/value", {"text": SEARCH})
        browser.s("POST", f"/element/{browser.find('#search-text-run')}/click", {})
        items = browser.wait_for("#search-results figcaption")
        got_hits = [browser.text(f).split(". ", 1)[1].rsplit(" (", 1)[0] for f in items]
        assert got_hits == want_hits, f"page search {got_hits} != API {want_hits}"
        loaded = "return Array.from(document.querySelectorAll('#search-results img')).map(i => i.naturalWidth)"
        deadline = time.time() + 30
        while True:
            widths = browser.s("POST", "/execute/sync", {"script": loaded, "args": []})
            if widths and all(w > 0 for w in widths) or time.time() > deadline:
                break
            time.sleep(0.1)
        assert widths and all(0 < w <= 256 for w in widths), f"thumbnails did not load: {widths}"
        print(f"text search: {len(got_hits)} results as the API's, {len(widths)} thumbnails shown")
        browser.s("POST", "/execute/sync", {"script": "document.getElementById('search-results').replaceChildren()",
                                            "args": []})
        browser.s("POST", f"/element/{browser.find('#search-image-run')}/click", {})
        assert len(browser.wait_for("#search-results figcaption")) == 5
        print("image search: 5 results")

        if args.screenshots:
            os.makedirs(args.screenshots, exist_ok=True)
            top = {"script": "window.scrollTo(0, 0)", "args": []}
            browser.s("POST", "/window/rect", {"width": 1200, "height": 1900})
            browser.s("POST", "/execute/sync", top)
            browser.screenshot(os.path.join(args.screenshots, "serve-page.png"))
            browser.s("POST", "/window/rect", {"width": 390, "height": 3000})
            browser.s("POST", "/execute/sync", top)
            browser.screenshot(os.path.join(args.screenshots, "serve-page-phone.png"))
            print(f"screenshots in {args.screenshots}")
        print("ok: the page works in headless chromium")
    finally:
        if browser:
            browser.quit()
        driver.terminate()
        server.terminate()
        server.wait(timeout=30)
        driver.wait(timeout=30)
        scratch.cleanup()


if __name__ == "__main__":
    main()
