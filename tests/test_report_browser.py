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


LAYOUT = """<script>window.addEventListener('load', () => {
  const page = document.documentElement.clientWidth;
  const tables = [...document.querySelectorAll('table')];
  const wide = tables.filter(t => t.getBoundingClientRect().right > page + 1 || t.scrollWidth > t.clientWidth + 1
    || t.getBoundingClientRect().width > document.body.clientWidth + 1);
  const alts = [...document.images].map(i => i.alt);
  const has = (s) => alts.some(a => a.includes(s)) ? 1 : 0;
  const v = document.getElementById('verdict-box');
  const first = v && document.querySelector('section') === v.parentElement ? 1 : 0;
  const d = document.createElement('div'); d.id = 'layout';
  d.textContent = `verdict=${v ? 1 : 0} first=${first} steps=${has('Quality against sampling steps')} ` +
    `cost=${has('against training')} tables=${tables.length} wide=${wide.length} page=${page}`;
  document.body.appendChild(d);
});</script>"""


def test_report_answers_at_a_glance_and_fits_the_page(tmp_path):
    """The verdict opens the page, the quality-against-steps and quality-against-cost figures are there, and no
    table is wider than the page (at a laptop's 1280 px and a narrow 900 px window)."""
    from PIL import Image
    from test_report_verdict import make_step_sweep

    sd = make_step_sweep(tmp_path / "sweep")
    for job in range(9):
        for nfe in (1, 4):
            for i in range(2):
                png = sd / str(job) / "samples" / "epoch_0000" / f"nfe_{nfe}" / f"sample_{i:02d}.png"
                png.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray((np.random.default_rng(job + i).random((32, 96)) * 255).astype("uint8")).save(png)
    res = build_report([sd], real=False)
    page = (res["out"] / "report.html").read_text()
    assert page.count('alt="model.prediction_type=') == 6  # one sample grid per arm x step count (1, 4)
    probe = tmp_path / "layout.html"
    probe.write_text(page.replace("</body>", LAYOUT + "</body>"))
    for width in (1280, 900):
        dom = _chromium("--virtual-time-budget=5000", f"--window-size={width},2000", "--dump-dom", probe.as_uri())
        assert dom.returncode == 0, dom.stderr[-2000:]
        m = re.search(r"verdict=(\d) first=(\d) steps=(\d) cost=(\d) tables=(\d+) wide=(\d+) page=(\d+)", dom.stdout)
        assert m, dom.stdout[-2000:]
        verdict, first, steps, cost, tables, wide, px = map(int, m.groups())
        assert (verdict, first, steps, cost) == (1, 1, 1, 1)
        assert tables >= 5 and wide == 0, (width, m.group(0))
        assert px > 600  # the window size took effect
    # the probe sees a table wider than the page: the old 47-column runs table, cells that do not wrap
    cells = "".join(f'<td style="white-space:nowrap">best val/feat3d_fd/nfe{i}</td>' for i in range(47))
    probe.write_text(page.replace("</body>", f"<table><tr>{cells}</tr></table>" + LAYOUT + "</body>"))
    dom = _chromium("--virtual-time-budget=5000", "--window-size=1280,2000", "--dump-dom", probe.as_uri())
    assert re.search(r"wide=1 ", dom.stdout), dom.stdout[-500:]
