"""Render a job summary as GitHub shows it, charts included, in headless Chromium.

Markdown becomes HTML through GitHub's own engine (cmark-gfm, via ``cmarkgfm``) with the
extensions github.com enables, then goes through an allow-list sanitiser (``nh3``) holding
the tags and attributes of GitHub's (html-pipeline's SanitizationFilter; an approximation,
GitHub's live list is not published). ```` ```mermaid ```` fences become diagrams drawn by
mermaid 11 (pinned in scripts/stack.sh, installed into .stack/npm), and Playwright drives
Debian's Chromium: Playwright's own browser downloads are never used, so this works offline.

:func:`render_summary` reports how many charts there were and how many drew, mermaid's
errors, the page's visible text, and can save a full-page screenshot.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cmarkgfm
import nh3
from cmarkgfm.cmark import Options
from playwright.sync_api import sync_playwright

from tests.support.stack import STACK_DIR

if TYPE_CHECKING:
    from playwright.sync_api import Error, Route, ViewportSize

MERMAID_JS = STACK_DIR / "npm" / "node_modules" / "mermaid" / "dist" / "mermaid.min.js"

# What github.com turns on (tagfilter escapes <script>, <style>, <iframe>, ... into text, as
# GitHub shows them). PRE_LANG writes ```mermaid as <pre lang="mermaid">, as GitHub does.
_EXTENSIONS = ("table", "strikethrough", "autolink", "tagfilter", "tasklist")
_OPTIONS = Options.CMARK_OPT_UNSAFE | Options.CMARK_OPT_GITHUB_PRE_LANG


def _words(text: str) -> set[str]:
    return set(text.split())


# html-pipeline's SanitizationFilter allow-list (what GitHub's sanitiser grew from). input is
# for task lists, which GitHub adds after sanitising; rel is left to nh3's link_rel.
_TAGS = _words("""
    h1 h2 h3 h4 h5 h6 h7 h8 br b i strong em a pre code img tt div ins del sup sub p ol ul table
    thead tbody tfoot blockquote dl dt dd kbd q samp var hr ruby rt rp li tr td th s strike summary
    details caption figure figcaption abbr bdo cite dfn mark small span time wbr input
""")
_ANY_TAG_ATTRIBUTES = _words("""
    abbr accept accept-charset accesskey action align alt aria-describedby aria-hidden aria-label
    aria-labelledby axis border cellpadding cellspacing char charoff charset checked clear cols
    colspan color compact coords datetime dir disabled enctype for frame headers height hreflang
    hspace ismap label lang maxlength media method multiple name nohref noshade nowrap open prompt
    readonly rev rows rowspan rules scope selected shape size span start summary tabindex target
    title type usemap valign value vspace width itemprop
""")
_ATTRIBUTES = {
    "*": _ANY_TAG_ATTRIBUTES,
    "a": {"href"},
    "img": {"src", "longdesc"},
    "div": {"itemscope", "itemtype"},
    "blockquote": {"cite"},
    "del": {"cite"},
    "ins": {"cite"},
    "q": {"cite"},
}

_MERMAID_FENCE = re.compile(r'<pre lang="mermaid"><code>(.*?)</code></pre>', re.DOTALL)

# A light job-summary look: GitHub's system font stack, bordered tables, an 880 px column.
_CSS = """
body { margin: 0; background: #fff; color: #1f2328;
  font: 14px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", "Noto Sans", Helvetica, Arial,
    sans-serif; }
.markdown-body { box-sizing: border-box; max-width: 880px; margin: 0 auto; padding: 16px 24px; }
h1, h2, h3 { margin: 24px 0 16px; font-weight: 600; line-height: 1.25; }
h1 { font-size: 2em; padding-bottom: .3em; border-bottom: 1px solid #d1d9e0; }
h2 { font-size: 1.5em; padding-bottom: .3em; border-bottom: 1px solid #d1d9e0; }
h3 { font-size: 1.25em; }
p, ul, ol, table, pre, details { margin: 0 0 16px; }
table { border-collapse: collapse; border-spacing: 0; display: block; width: max-content;
  max-width: 100%; overflow: auto; }
th, td { padding: 6px 13px; border: 1px solid #d1d9e0; }
th { font-weight: 600; }
tr { background: #fff; border-top: 1px solid #d1d9e0; }
tr:nth-child(2n) { background: #f6f8fa; }
code, tt { padding: .2em .4em; font-size: 85%; background: #818b981f; border-radius: 6px;
  font-family: ui-monospace, SFMono-Regular, "SF Mono", Menlo, Consolas, "Liberation Mono", monospace; }
pre { padding: 16px; overflow: auto; background: #f6f8fa; border-radius: 6px; }
pre code { padding: 0; background: transparent; }
pre.mermaid { background: #fff; text-align: center; }
summary { cursor: pointer; }
a { color: #0969da; text-decoration: none; }
"""

# One run over every chart, so each SVG gets its own id (mermaid-0, mermaid-1, ...: mermaid
# scopes a chart's styles by it) and one broken chart does not stop the others. A chart that
# drew holds its SVG as its only child; a broken one keeps its source and gets mermaid's error
# picture ("Syntax error in text") in a box beside it. Charts are tried in order and
# parseError is called once per broken one, so its messages go to the broken charts in order.
# A chart counts as drawn when its SVG holds marks with an area: gantt bars, xychart bars or
# lines, or (other kinds) any shape.
_RUN_MERMAID = """
async () => {
  mermaid.initialize({startOnLoad: false, theme: "default", securityLevel: "strict",
                      deterministicIds: true});
  const messages = [];
  mermaid.parseError = (error) => messages.push(String((error && error.message) || error));
  try {
    await mermaid.run({querySelector: "pre.mermaid"});
  } catch (e) {
    // Thrown again once every chart was tried: parseError has it already.
  }
  const marks = {gantt: "rect.task", xychart: ".plot rect, .plot path"};
  return [...document.querySelectorAll("pre.mermaid")].map((node) => {
    const svg = node.children.length === 1 ? node.querySelector(":scope > svg") : null;
    const kind = svg ? svg.getAttribute("aria-roledescription") || "" : "";
    if (!svg || kind === "error") {
      return {drawn: false, error: messages.shift() || "mermaid drew no chart"};
    }
    const shapes = svg.querySelectorAll(marks[kind] || "rect, path, circle, polygon, ellipse");
    const area = [...shapes].filter((s) => { const b = s.getBBox(); return b.width > 0 && b.height > 0; });
    return area.length ? {drawn: true, error: null} : {drawn: false, error: `the ${kind} chart has no marks`};
  });
}
"""

VIEWPORT: ViewportSize = {"width": 960, "height": 720}
SCALE = 1
TIMEOUT_MS = 60_000


@dataclass(frozen=True)
class Rendered:
    charts: int  # ```mermaid blocks found
    drawn: int  # of them, those that became an SVG with marks (bars, lines, shapes) and no error
    errors: tuple[str, ...]  # why a chart did not draw (by number, from 1), uncaught page errors
    text: str  # the page's visible text
    html: str  # the summary's HTML once mermaid drew (the SVGs in place)


def summary_html(markdown: str) -> str:
    """The job summary's body as GitHub makes it: cmark-gfm, sanitised, mermaid fences as
    ``<pre class="mermaid">`` (mermaid reads the entity-escaped source back as text)."""
    raw = str(cmarkgfm.markdown_to_html_with_extensions(markdown, _OPTIONS, list(_EXTENSIONS)))
    clean = nh3.clean(
        raw,
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="nofollow",
        strip_comments=True,
    )
    return _MERMAID_FENCE.sub(r'<pre class="mermaid">\1</pre>', clean)


def chromium() -> str:
    """Debian's Chromium binary (its /usr/bin launcher adds flags from /etc/chromium.d), else
    a Chromium or Chrome on PATH (GitHub's runners): the ones scripts/stack.sh accepts."""
    on_path = map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))
    for found in ("/usr/lib/chromium/chromium", *on_path):
        if found and Path(found).is_file():
            return found
    raise RuntimeError("no Chromium: run `bash scripts/stack.sh` (Debian package chromium)")


def render_summary(markdown: str, png: Path | None = None) -> Rendered:
    """Render ``markdown`` as a job summary in headless Chromium; save a screenshot to ``png``."""
    if not MERMAID_JS.is_file():
        raise RuntimeError(f"no {MERMAID_JS}: run `bash scripts/stack.sh` (npm install mermaid)")
    page_html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<style>{_CSS}</style></head><body>"
        f'<article class="markdown-body">{summary_html(markdown)}</article></body></html>'
    )
    page_errors: list[str] = []
    with sync_playwright() as pw:
        # As root Chromium's sandbox cannot start: chromium_sandbox=False passes --no-sandbox.
        browser = pw.chromium.launch(
            executable_path=chromium(),
            chromium_sandbox=False,
            timeout=TIMEOUT_MS,
            args=["--disable-gpu", "--disable-dev-shm-usage", "--font-render-hinting=none"],
        )
        try:
            page = browser.new_page(viewport=VIEWPORT, device_scale_factor=SCALE)
            page.set_default_timeout(TIMEOUT_MS)

            # Nothing leaves the machine: a summary's images or links never make a request.
            def refuse(route: Route) -> None:
                route.abort()

            def on_error(error: Error) -> None:
                page_errors.append(f"page error: {error.message}")

            page.route("**/*", refuse)
            page.on("pageerror", on_error)
            page.set_content(page_html, wait_until="load")
            page.add_script_tag(path=MERMAID_JS)
            charts: list[dict[str, Any]] = page.evaluate(_RUN_MERMAID)
            text = page.inner_text("body")
            html = page.inner_html("article")
            if png is not None:
                page.screenshot(path=png, full_page=True, animations="disabled")
        finally:
            browser.close()
    chart_errors = [f"chart {n}: {c['error']}" for n, c in enumerate(charts, 1) if c["error"] is not None]
    return Rendered(
        charts=len(charts),
        drawn=sum(1 for c in charts if c["drawn"]),
        errors=(*chart_errors, *page_errors),
        text=text,
        html=html,
    )
