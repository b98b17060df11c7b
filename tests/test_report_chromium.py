"""The report opens in a real browser (headless Chromium) with every image decoded.

A copy of the report gets a small script that writes each ``<img>``'s ``naturalWidth`` into
the DOM once the page has loaded; ``--dump-dom`` prints it.  A page with a broken image
proves that the check can fail.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_outputs_fakes import MODEL_CARD, SHA, make_session

from bids_mdpp.outputs import write_session_outputs
from bids_mdpp.reports.participant import SessionReport, write_participant_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Chromium not installed (apt-get install -y chromium)")

PROBE = """<script>
window.addEventListener("load", () => {
  const widths = Array.from(document.images).map(img => img.complete ? img.naturalWidth : 0);
  document.body.setAttribute("data-image-widths", widths.join(","));
});
</script>"""


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=10000"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


def image_widths(html_path: Path, tmp_path: Path) -> list[int]:
    """naturalWidth of every <img> of the page, as Chromium decoded them."""
    probed = tmp_path / f"probed-{html_path.name}"
    probed.write_text(html_path.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"),
                      encoding="utf-8")
    run = chromium(tmp_path, "--dump-dom", probed.as_uri())
    match = re.search(r'data-image-widths="([0-9,]*)"', run.stdout)
    assert match, f"Chromium did not run the page: {run.stderr[-2000:]}"
    return [int(w) for w in match.group(1).split(",") if w]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("chromium")
    fake = make_session(root)
    outputs = write_session_outputs(root / "out", fake.inputs, fake.preproc, fake.prob,
                                    model_card=MODEL_CARD, model_sha256=SHA)
    return write_participant_report(root / "out", "01",
                                    [SessionReport(fake.inputs, fake.preproc, outputs, "", None)])


def test_every_image_of_the_report_is_decoded(report, tmp_path):
    widths = image_widths(report, tmp_path)
    assert len(widths) == 5
    assert all(w > 0 for w in widths), widths


def test_a_broken_image_is_detected(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<html><body><img src="data:image/png;base64,iVBORw0KGgoAAAA="></body></html>')
    assert image_widths(page, tmp_path) == [0]


def test_screenshot(report, tmp_path):
    shot = tmp_path / "report.png"
    chromium(tmp_path, "--window-size=1280,2000", f"--screenshot={shot}", report.as_uri())
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
