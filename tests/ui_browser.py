#!/usr/bin/env python3
"""Drives headless Chromium through the DevTools protocol for
tests/ui_browser.rs, with the standard library only (a small websocket
client below).

It loads the debug UI, clicks the sandbox in the list, waits for its
decisions to appear, clicks Allow on the pending `ask` about --ask (real
mouse events, Input.dispatchMouseEvent), waits for the allowed decision to
come back through the stream, opens "why?" on a refused listing, and saves
a screenshot. Prints one JSON line of what it saw; exits non-zero (after a
screenshot named *-failed.png) on any failure.

Usage: ui_browser.py --url URL --sandbox ID --ask SUBJECT --screenshot PNG
       [--chromium /usr/bin/chromium] [--timeout 60]
"""

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request


class WebSocket:
    """RFC 6455 client: text frames out (masked), frames in."""

    def __init__(self, url, timeout=30):
        assert url.startswith("ws://"), url
        hostport, path = url[len("ws://"):].split("/", 1)
        host, port = hostport.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((
            f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = bytearray()
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            self.buf += chunk
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n")[0] + b" ":
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")
        self.buf = bytearray(rest)

    def _frame(self, opcode, data):
        head = bytearray([0x80 | opcode])
        n = len(data)
        if n < 126:
            head.append(0x80 | n)
        elif n < 1 << 16:
            head.append(0x80 | 126)
            head += struct.pack(">H", n)
        else:
            head.append(0x80 | 127)
            head += struct.pack(">Q", n)
        mask = os.urandom(4)
        head += mask
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(bytes(head) + body)

    def send(self, text):
        self._frame(0x1, text.encode())

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("websocket closed")
            self.buf += chunk
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def recv(self):
        message = bytearray()
        while True:
            b0, b1 = self._read(2)
            opcode = b0 & 0x0F
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x8:
                raise ConnectionError("websocket closed by the browser")
            if opcode == 0x9:
                self._frame(0xA, payload)
                continue
            if opcode in (0x0, 0x1, 0x2):
                message += payload
                if b0 & 0x80:
                    return message.decode()


class Page:
    """One page target, driven by DevTools protocol calls."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.console = []

    def call(self, method, **params):
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            m = json.loads(self.ws.recv())
            if m.get("id") == my_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            if m.get("method") == "Runtime.consoleAPICalled":
                args = m["params"].get("args", [])
                self.console.append(" ".join(str(a.get("value", "")) for a in args))
            elif m.get("method") == "Runtime.exceptionThrown":
                d = m["params"]["exceptionDetails"]
                self.console.append("exception: " + d.get("exception", {}).get("description", d.get("text", "")))

    def eval(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"evaluate {expr[:80]!r}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expr, what, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            v = self.eval(expr)
            if v:
                return v
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout}s for {what}")
            time.sleep(0.1)

    def click(self, selector, what, timeout=20):
        """A real click: the element's centre, mouse moved, pressed, released."""
        js = ("(() => { const e = document.querySelector(%s); if (!e || e.disabled) return null;"
              " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
              " if (!r.width || !r.height) return null;"
              " return {x: r.x + r.width / 2, y: r.y + r.height / 2}; })()") % json.dumps(selector)
        at = self.wait(js, what, timeout)
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=at["x"], y=at["y"])
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=at["x"], y=at["y"],
                      button="left", buttons=1, clickCount=1)

    def screenshot(self, path):
        r = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(r["data"]))


def start_chromium(binary, profile, timeout):
    """Starts headless Chromium; returns (process, DevTools port)."""
    proc = subprocess.Popen(
        [binary, "--headless", "--no-sandbox", "--disable-gpu",
         "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
         f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check",
         "--disable-extensions", "--disable-background-networking", "--disable-sync",
         "--disable-component-update", "--metrics-recording-only", "--mute-audio",
         "--window-size=1280,1400", "about:blank"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    active = os.path.join(profile, "DevToolsActivePort")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode}")
        try:
            with open(active) as f:
                port = int(f.readline().strip())
            return proc, port
        except (OSError, ValueError):
            time.sleep(0.05)
    raise TimeoutError("chromium did not open its DevTools port")


def page_target(port, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                targets = json.load(r)
            for t in targets:
                if t.get("type") == "page" and t.get("webSocketDebuggerUrl"):
                    return t["webSocketDebuggerUrl"]
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("no page target in chromium")
        time.sleep(0.1)


ROWS = ("[...document.querySelectorAll('#decisions tbody tr.decision')]"
        ".map(tr => [...tr.cells].map(c => c.firstChild ? c.firstChild.textContent : ''))")


def has_row(subject, decision):
    return ("%s.some(r => r[2] === %s && r[3] === %s)"
            % (ROWS, json.dumps(subject), json.dumps(decision)))


def drive(page, args):
    seen = {}
    page.call("Page.enable")
    page.call("Runtime.enable")
    page.call("Emulation.setDeviceMetricsOverride", width=1280, height=1400,
              deviceScaleFactor=1, mobile=False)
    page.call("Page.navigate", url=args.url)
    page.wait("document.readyState === 'complete' && !!document.getElementById('sandboxes')",
              "the page to load")
    # The list shows the running sandbox; open it with a click.
    row = 'tr.sandbox[data-id=%s]' % json.dumps(args.sandbox)
    page.wait("!!document.querySelector(%s)" % json.dumps(row), "the sandbox in the list")
    seen["list_row"] = page.eval(
        "[...document.querySelector(%s).cells].map(c => c.textContent)" % json.dumps(row))
    page.click(row, "the sandbox row")
    page.wait("!document.getElementById('detail').hidden", "the sandbox's detail")
    # Decisions appear (replayed and live).
    page.wait(has_row("/data/ok.txt", "allow"), "the allowed read")
    page.wait(has_row("/data/secret", "deny"), "the refused read")
    # A hostile subject is shown as text: no element made from it.
    page.wait("%s.some(r => r[2].includes('<b>bold<'))" % ROWS, "the subject with markup")
    seen["markup_elements"] = page.eval("document.querySelectorAll('#decisions tbody b').length")
    if seen["markup_elements"]:
        raise AssertionError("markup from a subject became elements")
    # The pending question; Allow is clicked like a person would.
    ask = "#asks li.ask"
    page.wait("[...document.querySelectorAll(%s)].some(li => li.textContent.includes(%s))"
              % (json.dumps(ask), json.dumps(args.ask)), "the pending ask")
    seen["ask"] = page.eval("document.querySelector('#asks li.ask').textContent")
    page.screenshot(args.screenshot.replace(".png", "-ask.png"))
    page.click("#asks li.ask button.answer-allow", "the Allow button")
    # The supervisor got the answer: the allowed decision streams in.
    page.wait(has_row(args.ask, "allow"), "the answered ask's decision", timeout=15)
    page.wait("!document.querySelector('#asks li.ask')", "the ask to leave the list")
    # Why was the listing refused? The fix is offered, not applied.
    page.click("#decisions tbody tr.decision.deny button.why-btn", "a why? button")
    page.wait("!document.getElementById('why').hidden", "the why panel")
    seen["why_entry"] = page.eval("document.getElementById('why-entry').textContent")
    seen["why_explanation"] = page.eval("document.getElementById('why-explanation').textContent")
    page.click("#copy-entry", "the copy button")
    page.wait("document.getElementById('copied').textContent", "the copy to be acknowledged", timeout=5)
    # A learning container: its learned policy so far, offered as a file.
    page.wait("!document.getElementById('learned').hidden", "the learned policy")
    seen["learned_summary"] = page.eval("document.getElementById('learned-summary').textContent")
    seen["learned_href"] = page.eval("document.getElementById('learned-download').getAttribute('href')")
    seen["rows"] = page.eval(ROWS)
    seen["counts"] = page.eval("document.getElementById('counts').textContent")
    page.screenshot(args.screenshot)
    return seen


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--sandbox", required=True)
    ap.add_argument("--ask", required=True)
    ap.add_argument("--screenshot", required=True)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--timeout", type=int, default=60)
    args = ap.parse_args()
    # The whole run is bounded, whatever hangs.
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("overall timeout")))
    signal.alarm(args.timeout)
    profile = tempfile.mkdtemp(prefix="buntime-ui-chromium-")
    proc = None
    page = None
    started = time.monotonic()
    try:
        proc, port = start_chromium(args.chromium, profile, 30)
        page = Page(WebSocket(page_target(port)))
        seen = drive(page, args)
        seen["seconds"] = round(time.monotonic() - started, 1)
        seen["console"] = page.console
        print(json.dumps(seen))
        return 0
    except Exception as e:  # noqa: BLE001 - report whatever failed
        print(f"ui_browser.py: {type(e).__name__}: {e}", file=sys.stderr)
        if page is not None:
            print("console: " + json.dumps(page.console), file=sys.stderr)
            try:
                signal.alarm(10)
                page.screenshot(args.screenshot.replace(".png", "-failed.png"))
            except Exception:  # noqa: BLE001
                pass
        return 1
    finally:
        signal.alarm(0)
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
