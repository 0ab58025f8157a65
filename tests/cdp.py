"""Drive headless Chromium over the DevTools protocol (on a pipe: no port, no extra package).

Used by the explorer page's tests and benchmarks/explorer.py: opens a file, records console
errors, uncaught exceptions and every network request, evaluates JavaScript, clicks and takes
screenshots as a reader's browser would.
"""

import base64
import json
import os
import subprocess
import time
from pathlib import Path

from browser import find_chromium


class Browser:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(self, scratch: Path, width=1400, height=1000):
        browser = find_chromium()
        if browser is None:
            raise FileNotFoundError("no Chromium (apt-get install chromium; .ci/run does it)")
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()

        def connect_pipes():  # the protocol's fds: 3 read by Chromium, 4 written by it
            for source, target in ((to_browser_read, 3), (from_browser_write, 4)):
                if source == target:  # dup2 onto itself keeps close-on-exec
                    os.set_inheritable(target, True)
                else:
                    os.dup2(source, target)

        self.process = subprocess.Popen(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-pipe",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                f"--window-size={width},{height}",
                f"--user-data-dir={Path(scratch) / 'chromium-profile'}",
                "about:blank",
            ],
            close_fds=False,
            preexec_fn=connect_pipes,  # keeps 3 and 4 open
            stdout=subprocess.DEVNULL,
            stderr=open(Path(scratch) / "chromium.log", "w"),
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._next_id = 0
        self.events = []
        self.console_errors, self.requests = [], []
        targets = self.command("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.command(
            "Target.attachToTarget", targetId=page["targetId"], flatten=True
        )["sessionId"]
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.command(f"{domain}.enable", session=True)
        self.command(
            "Emulation.setDeviceMetricsOverride",
            session=True,
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        self.close()

    def close(self):
        try:
            self.command("Browser.close")
        except (OSError, RuntimeError):
            pass
        self.process.wait(timeout=30)
        os.close(self._to_browser)
        os.close(self._from_browser)

    def _read_message(self) -> dict:
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def _record(self, event: dict) -> None:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            self.console_errors.append(
                " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            )
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.console_errors.append(
                details.get("exception", {}).get("description") or details.get("text")
            )
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.console_errors.append(params["entry"]["text"])
        elif method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        self.events.append(event)

    def command(self, method: str, session=False, **params):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read_message()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._record(reply)

    def open(self, path: Path) -> None:
        self.command("Page.navigate", session=True, url=Path(path).resolve().as_uri())

    def evaluate(self, expression: str):
        """The value of a JavaScript expression (awaited when it is a promise)."""
        result = self.command(
            "Runtime.evaluate",
            session=True,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout=60.0) -> float:
        """Seconds until `expression` is true; TimeoutError after `timeout`."""
        start = time.perf_counter()
        while time.perf_counter() - start < timeout:
            try:
                if self.evaluate(expression):
                    return time.perf_counter() - start
            except RuntimeError:
                pass
            time.sleep(0.02)
        raise TimeoutError(f"{expression} was not true within {timeout} s")

    def click(self, x: float, y: float) -> None:
        """A real mouse click at page coordinates (CSS pixels of the viewport)."""
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.command(
                "Input.dispatchMouseEvent",
                session=True,
                type=kind,
                x=x,
                y=y,
                button="left" if kind != "mouseMoved" else "none",
                clickCount=1,
            )

    def screenshot(self, path: Path) -> None:
        """The whole page as PNG."""
        metrics = self.command("Page.getLayoutMetrics", session=True)["cssContentSize"]
        data = self.command(
            "Page.captureScreenshot",
            session=True,
            format="png",
            captureBeyondViewport=True,
            clip={
                "x": 0,
                "y": 0,
                "width": metrics["width"],
                "height": metrics["height"],
                "scale": 1,
            },
        )["data"]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(base64.b64decode(data))
