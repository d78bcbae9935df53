"""Report prose in HTML (code spans, escaping) and the report's --help text."""

from __future__ import annotations

import pytest

from neuromf.report import html_text, main, render


def test_code_spans_become_code_elements_and_the_rest_stays_escaped():
    assert html_text("Objective: `val/feat3d_fd/nfe1` (lower is better)") == (
        "Objective: <code>val/feat3d_fd/nfe1</code> (lower is better)"
    )
    assert html_text("`a<b>` & <script>") == "<code>a&lt;b&gt;</code> &amp; &lt;script&gt;"
    assert html_text("an odd ` stays") == "an odd ` stays"
    md, page = render("t", [("h2", "About `x`"), ("p", "by `python -m neuromf.report`"), ("p", "⚠ `arm` at noise")])
    assert (
        "`" not in page and "<code>python -m neuromf.report</code>" in page and "<h2>About <code>x</code></h2>" in page
    )
    assert "by `python -m neuromf.report`" in md  # Markdown keeps its code spans


def test_help_description_is_the_whole_first_paragraph(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "statistics over seeds, loss terms, reference levels, samples, cost and provenance -> report.md / report.html."
        in text
    )
