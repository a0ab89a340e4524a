"""The report's Figures tab without a browser: the no-figures line, PNGs inline under escaped stems."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import matplotlib.image
import numpy as np

from gradprobe.report.html import render_html, write_html


def _figures_tab(text: str) -> str:
    match = re.search(r'<section class="tab" id="tab-figures">(.*?)</section>', text, re.DOTALL)
    assert match is not None
    return match.group(1)


def test_a_page_without_figures_says_so_in_one_line(make_run, tmp_path: Path) -> None:
    path = write_html([make_run("exp", "a")], tmp_path / "report.html")
    tab = _figures_tab(path.read_text(encoding="utf-8"))
    assert tab == '<p class="empty">No figures: this page was written without them.</p>'


def test_pngs_are_inline_in_order_under_their_escaped_stems(make_run, tmp_path: Path) -> None:
    stems = ["02-b", '01-a"><img src=x onerror=alert(1)>&amp;']
    pngs = [tmp_path / f"{stem}.png" for stem in stems]
    for i, png in enumerate(pngs):
        matplotlib.image.imsave(png, np.full((3, 4 + i), float(i)))
    tab = _figures_tab(render_html([make_run("exp", "a")], figures=pngs))
    assert tab.count("<img") == 2 and "onerror=alert(1)>" not in tab
    assert re.findall(r"<figcaption>(.*?)</figcaption>", tab) == [html.escape(s) for s in stems]
    assert re.findall(r'<img alt="(.*?)"', tab) == [html.escape(s) for s in stems]
    sources = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]*)"', tab)
    assert [base64.b64decode(s, validate=True) for s in sources] == [p.read_bytes() for p in pngs]
