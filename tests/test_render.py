"""The report renders: report.md -> HTML (GitHub-flavoured tables) -> headless Chromium.

Asserts on what a browser shows, not on the Markdown text: the comparison table is a real
<table>, the Pareto plot is an <img> whose PNG loaded (non-zero natural size), and the screenshot
is not blank. Needs Debian's `chromium` (.ci/run installs it); skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from compress.report.markdown import render_report
from compress.report.plots import write_plots

GOLDEN = Path(__file__).parent / "golden"
CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
         "--allow-file-access-from-files"]

# After load, write each image's decoded size into the DOM, so --dump-dom can show it was loaded.
LOADED_SCRIPT = """<script>
window.addEventListener('load', () => {
  for (const img of document.images) {
    img.setAttribute('data-natural-width', img.naturalWidth);
    img.setAttribute('data-complete', img.complete);
  }
  document.body.setAttribute('data-loaded', 'yes');
});
</script>"""

pytestmark = [
    pytest.mark.slow,  # two Chromium launches and a matplotlib figure: ~15 s on the 2-core CI machine
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="chromium is not installed (Debian: apt-get install -y chromium; .ci/run does this)",
    ),
]


def markdown_to_html(text: str) -> str:
    """report.md as GitHub would show it: CommonMark plus pipe tables."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(text)
    return ("<!doctype html><html><head><meta charset='utf-8'><title>report</title>"
            "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}</style>"
            f"</head><body>{body}{LOADED_SCRIPT}</body></html>")


class _Dom(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables, self.rows, self.imgs, self.body = 0, 0, [], {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables += 1
        elif tag == "tr":
            self.rows += 1
        elif tag == "img":
            self.imgs.append(a)
        elif tag == "body":
            self.body = a


def _chromium(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, *args], capture_output=True, text=True, timeout=timeout_s,
                          check=False)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict:
    """The golden run's report and plot, rendered to HTML in one folder, then opened in Chromium."""
    results = json.loads((GOLDEN / "results.json").read_text())
    folder = tmp_path_factory.mktemp("render")
    (folder / "report.md").write_text(render_report(results))
    plots = write_plots(results, folder)
    html = folder / "report.html"
    html.write_text(markdown_to_html((folder / "report.md").read_text()))
    t0 = time.perf_counter()
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", html.as_uri())
    shot = folder / "screenshot.png"
    _chromium("--window-size=1280,2400", "--hide-scrollbars", f"--screenshot={shot}", html.as_uri())
    return {"dom": dom, "shot": shot, "plots": plots, "seconds": time.perf_counter() - t0}


def test_report_renders_its_table(rendered):
    assert rendered["dom"].returncode == 0, rendered["dom"].stderr[-2000:]
    dom = _Dom()
    dom.feed(rendered["dom"].stdout)
    assert dom.body.get("data-loaded") == "yes"  # scripts ran after load: the DOM below is final
    assert dom.tables >= 1
    assert dom.rows >= 6  # the comparison table: header + baseline + 4 variants
    assert "<td><strong>int8</strong></td>" in rendered["dom"].stdout


def test_report_shows_the_pareto_plot(rendered):
    dom = _Dom()
    dom.feed(rendered["dom"].stdout)
    (plot,) = rendered["plots"]
    imgs = [i for i in dom.imgs if i.get("src") == plot.name]
    assert len(imgs) == 1, dom.imgs
    assert imgs[0].get("data-complete") == "true"
    assert int(imgs[0]["data-natural-width"]) > 100  # the PNG was found and decoded


def test_screenshot_is_not_blank(rendered):
    from PIL import Image

    shot = rendered["shot"]
    assert shot.exists()
    with Image.open(shot) as im:
        assert im.size == (1280, 2400)
        gray = im.convert("L")
        lo, hi = gray.getextrema()
        assert hi - lo > 100  # text on a page, not one colour
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50  # anti-aliased text and the plot's markers
