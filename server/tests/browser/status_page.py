#!/usr/bin/env python3
"""Drives the admin status page in headless Chromium, for
server/tests/status_page.rs.

It speaks the DevTools protocol over --remote-debugging-pipe (JSON
messages ending in NUL on the browser's fds 3 and 4), so it needs nothing
beyond Python's standard library and Debian's chromium.

Usage: status_page.py CHROMIUM URL SCREENSHOT CLIENT

Steps, one line of output each; any failure exits 1 naming the step:
 1. the page lists CLIENT and a tunnel (the test then makes a login fail);
    a `?token=` in URL is gone from the address bar at once, and no
    request after the page itself carries it in its URL, the event stream
    sending it as an Authorization header instead;
 2. the tunnel's byte count and rate on the page move while traffic flows,
    and the failed login shows as a rejection;
 3. a screenshot of the page goes to SCREENSHOT;
 4. a mouse click on CLIENT's Kick button kicks it: its row disappears.
"""

import base64
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse

PATIENCE = 60.0  # seconds any one step may take: a failure guard


class Failed(Exception):
    pass


class Browser:
    """One headless Chromium and one page in it."""

    def __init__(self, chromium):
        self.profile = tempfile.mkdtemp(prefix="reitunnel-chromium-")
        to_browser = os.pipe()
        from_browser = os.pipe()

        def pipes_on_3_and_4():
            # Copies first: a pipe end may itself be fd 3 or 4.
            reads, writes = os.dup(to_browser[0]), os.dup(from_browser[1])
            os.dup2(reads, 3)
            os.dup2(writes, 4)

        self.proc = subprocess.Popen(
            [
                chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--remote-debugging-pipe", "--window-size=1500,900",
                f"--user-data-dir={self.profile}", "about:blank",
            ],
            preexec_fn=pipes_on_3_and_4,
            close_fds=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser[0])
        os.close(from_browser[1])
        self.out, self.inp = to_browser[1], from_browser[0]
        self.buffer = b""
        self.next_id = 0
        self.session = None
        self.requests = []  # what the page sent, from Network.requestWillBeSent
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Network.enable")

    def call(self, method, params=None):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if self.session:
            message["sessionId"] = self.session
        os.write(self.out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + PATIENCE
        while True:
            reply = self.receive(deadline, method)
            if reply.get("method") == "Network.requestWillBeSent":
                self.requests.append(reply["params"]["request"])
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise Failed(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def receive(self, deadline, waiting_for):
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.inp], [], [], left)[0]:
                raise Failed(f"no answer from Chromium to {waiting_for}")
            chunk = os.read(self.inp, 1 << 16)
            if not chunk:
                raise Failed(f"Chromium exited during {waiting_for}")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise Failed(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, what, expression, holds=bool):
        deadline = time.monotonic() + PATIENCE
        while True:
            value = self.evaluate(expression)
            if holds(value):
                return value
            if time.monotonic() > deadline:
                raise Failed(f"{what}: still {value!r} after {PATIENCE:.0f} s")
            time.sleep(0.2)

    def click(self, x, y):
        """A real left click: the mouse moves there, presses, releases."""
        for kind, buttons in (("mouseMoved", 0), ("mousePressed", 1), ("mouseReleased", 0)):
            params = {"type": kind, "x": x, "y": y, "button": "left", "buttons": buttons, "clickCount": 1}
            if kind == "mouseMoved":
                params["button"] = "none"
            self.call("Input.dispatchMouseEvent", params)

    def close(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


def main(chromium, url, screenshot, client):
    browser = Browser(chromium)
    try:
        browser.call("Page.navigate", {"url": url})
        row = f'document.querySelector(\'tr[data-client="{client}"]\')'
        browser.wait_for(f"{client} listed", f"{row} !== null")
        browser.wait_for("a tunnel listed", "document.querySelector('tr[data-tunnel]') !== null")
        token = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).get("token", [None])[0]
        if token is not None:
            search = browser.evaluate("location.search")
            if search:
                raise Failed(f"the address bar still shows {search!r}")
            leaks = [r["url"] for r in browser.requests[1:] if "token=" in r["url"]]
            if leaks:
                raise Failed(f"the token went in URLs: {leaks}")
            streams = [r for r in browser.requests if urllib.parse.urlsplit(r["url"]).path == "/api/v1/events"]
            if not any(r["headers"].get("Authorization") == f"Bearer {token}" for r in streams):
                raise Failed(f"the event stream was asked for without the token in a header: {streams}")
        print(f"ok 1: {client} and its tunnel are listed; the token is only ever in headers", flush=True)

        count = "Number(document.querySelector('tr[data-tunnel] .bytes-in').dataset.bytes)"
        first = browser.evaluate(count)
        browser.wait_for("the tunnel's bytes to grow", count, lambda n: n > first)
        rate = "document.querySelector('tr[data-tunnel] .rate-in').textContent"
        shown = browser.wait_for("a rate above zero", rate, lambda r: r and not r.startswith("0 "))
        rejected = browser.wait_for("the failed login counted", "document.getElementById('rejected').textContent",
                                    lambda t: t == "1 rejected")
        print(f"ok 2: bytes in went from {first} to more; rate in shows {shown}; {rejected}", flush=True)

        png = browser.call("Page.captureScreenshot", {"format": "png"})["data"]
        with open(screenshot, "wb") as f:
            f.write(base64.b64decode(png))
        print(f"ok 3: screenshot in {screenshot}", flush=True)

        where = (f"(() => {{ const b = {row}.querySelector('button.kick'); b.scrollIntoView();"
                 " const r = b.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        x, y = browser.evaluate(where)
        browser.click(x, y)
        browser.wait_for(f"{client}'s row to disappear after the kick", f"{row} === null")
        print(f"ok 4: the Kick button kicked {client}; its row is gone", flush=True)
    finally:
        browser.close()


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    try:
        main(*sys.argv[1:])
    except Failed as e:
        print(f"FAILED: {e}", flush=True)
        sys.exit(1)
