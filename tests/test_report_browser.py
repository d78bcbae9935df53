"""report.html in a real browser (headless Chromium): loads without console errors, tables and images render."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from test_report_sweep import make_run

from neuromf.report import build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHECK = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const d = document.createElement('div'); d.id = 'check';
  d.textContent = `tables=${document.querySelectorAll('table').length} images=${imgs.length} loaded=${ok}`;
  document.body.appendChild(d);
});</script>"""

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("CI") != "true", reason="chromium not installed (make test installs it)"
)


def _chromium(*args: str) -> subprocess.CompletedProcess:
    assert CHROMIUM, "CI=true: chromium must be installed (make test installs it with apt-get)"
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=600)


def test_report_html_renders_in_chromium(tmp_path):
    from PIL import Image

    sd = tmp_path / "sweep"
    for job, (pred, seed, best) in enumerate([("u", 0, 0.1), ("u", 1, 0.12), ("x", 0, 0.2), ("x", 1, 0.25)]):
        make_run(sd / str(job), pred, seed, best)
        png = sd / str(job) / "samples" / "epoch_0000" / "nfe_1" / "sample_00.png"
        png.parent.mkdir(parents=True)
        Image.fromarray((np.random.default_rng(job).random((32, 96)) * 255).astype("uint8")).save(png)
    res = build_report([sd], real=False)
    page = (res["out"] / "report.html").read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", CHECK + "</body>"))

    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    errors = [ln for ln in dom.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert errors == [], errors
    m = re.search(r"tables=(\d+) images=(\d+) loaded=(\d+)", dom.stdout)
    assert m, dom.stdout[-2000:]
    tables, images, loaded = map(int, m.groups())
    assert tables >= 5 and images >= 4 and loaded == images

    shot = tmp_path / "shot.png"
    run = _chromium(f"--screenshot={shot}", "--window-size=1280,2000", (res["out"] / "report.html").as_uri())
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 5  # not a blank page
