"""Open a Snakemake HTML report in headless Chromium and see what a reader sees."""

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

DRIVER = Path(__file__).with_name("report_driver.js")
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    for name in BROWSERS:
        if shutil.which(name):
            return shutil.which(name)
    return None


def rendered_figures(report: Path, scratch: Path, timeout: int = 300) -> list[dict]:
    """Click through every result of `report` in Chromium; one dict per figure shown.

    Keys: category, subcategory, row (the table row's text), image (the data URI
    the page displays), width (its decoded width in pixels) and captions.
    """
    browser = find_chromium()
    if browser is None:
        raise FileNotFoundError("no Chromium (apt-get install chromium; .ci/run does it)")
    page = scratch / "report_under_test.html"
    text = report.read_text()
    end = text.rfind("</body>")
    page.write_text(text[:end] + "<script>" + DRIVER.read_text() + "</script>" + text[end:])
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", f"--user-data-dir={scratch / 'chromium-profile'}",
               "--virtual-time-budget=60000", "--dump-dom", page.as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    # The last match: the element the driver appended after the page's own scripts.
    matches = re.findall(r'<pre id="klomflow-report-check">(.*?)</pre>', result.stdout, re.S)
    if not matches:
        raise AssertionError(f"the report did not render (exit {result.returncode}):\n"
                             f"{result.stderr[-3000:]}")
    payload = json.loads(html.unescape(matches[-1]))
    if isinstance(payload, dict):
        raise AssertionError(f"clicking through the report failed: {payload}")
    return payload
