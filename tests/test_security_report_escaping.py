"""Untrusted text in a sweep dir stays text in report.html: markup in a config value, an arm name (overrides) and
a status reason runs no script in headless Chromium (no alert, no console error) and is shown as written."""

from __future__ import annotations

import json
import re

import yaml
from test_report_browser import _chromium, pytestmark  # noqa: F401  (skipped where Chromium is missing)
from test_report_sweep import make_run

from neuromf.report import build_report

SCRIPT = "<script>alert('script')</script>"
IMG = "\"><img src=x onerror=alert('img')>"
# first in <head>: every alert/confirm/prompt and every script or inline handler that runs is counted
PROBE = """<script id="probe">window.__calls = [];
for (const f of ['alert', 'confirm', 'prompt']) window[f] = (m) => { window.__calls.push(f + ':' + m); };
window.addEventListener('load', () => {
  const d = document.createElement('div'); d.id = 'verdict';
  const scripts = [...document.scripts].filter(s => s.id !== 'probe').length;
  const handlers = document.querySelectorAll('[onerror],[onload],[onclick]').length;
  d.textContent = `calls=${window.__calls.length} scripts=${scripts} handlers=${handlers} imgs_x=` +
    `${[...document.images].filter(i => i.getAttribute('src') === 'x').length}`;
  document.body.appendChild(d);
});</script>"""


def _hostile_sweep(tmp_path):
    """Two arms named by markup (model.prediction_type), a config value of markup, a failed run whose reason is
    markup."""
    sd = tmp_path / "sweep"
    for job, (pred, seed, best) in enumerate([(SCRIPT, 0, 0.1), (SCRIPT, 1, 0.12), (IMG, 0, 0.2), (IMG, 1, 0.22)]):
        make_run(sd / str(job), pred, seed, best)
        cfg = {"seed": seed, "notes": SCRIPT if job < 2 else IMG, "model": {"prediction_type": pred}}
        (sd / str(job) / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    make_run(sd / "4", IMG, 2, 0.3, status="failed")
    status = json.loads((sd / "4" / "status.json").read_text())
    (sd / "4" / "status.json").write_text(json.dumps({**status, "reason": f"RuntimeError: {SCRIPT} {IMG}"}))
    return sd


def test_markup_from_a_sweep_dir_renders_as_text_in_chromium(tmp_path):
    res = build_report([_hostile_sweep(tmp_path)], real=False)
    page = (res["out"] / "report.html").read_text()
    assert SCRIPT not in page and "<img src=x" not in page  # escaped in the file itself
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("<head>", "<head>" + PROBE, 1))
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    errors = [ln for ln in dom.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert errors == [], errors
    m = re.search(r"calls=(\d+) scripts=(\d+) handlers=(\d+) imgs_x=(\d+)", dom.stdout)
    assert m, dom.stdout[-2000:]
    assert m.groups() == ("0", "0", "0", "0")
    # shown as written: the serialised DOM holds the markup as escaped text (arm names, config diff, the reason)
    text = dom.stdout
    assert text.count("&lt;script&gt;alert('script')&lt;/script&gt;") >= 3
    assert text.count("\"&gt;&lt;img src=x onerror=alert('img')&gt;") >= 3
    assert "RuntimeError: &lt;script&gt;" in text


def test_the_probe_would_see_markup_that_ran(tmp_path):
    """The same probe on a page where the markup is not escaped counts the alerts, the script and the handler."""
    page = f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body><p>{SCRIPT}</p><p>{IMG}</p></body></html>"
    probe = tmp_path / "unescaped.html"
    probe.write_text(page.replace("<head>", "<head>" + PROBE, 1))
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    m = re.search(r"calls=(\d+) scripts=(\d+) handlers=(\d+) imgs_x=(\d+)", dom.stdout)
    assert m and int(m.group(1)) >= 2 and m.groups()[1:] == ("1", "1", "1"), dom.stdout[-2000:]
