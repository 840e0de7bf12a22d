"""tests/support/render.py: a job summary rendered as GitHub renders it, charts checked."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import pytest

from tests.support.render import SCALE, VIEWPORT, Rendered, render_summary

if TYPE_CHECKING:
    from pathlib import Path

FENCE = "```"

# What the action writes: cells escaped as entities and <code>, a gantt of the stages on a
# millisecond clock, and a bar chart with one bar per image.
SAMPLE = f"""\
### Lambda images published

| image | value |
|---|---|
| orders | <code>123456789012.dkr.ecr.eu-west-2.amazonaws.com/prod-orders&#64;sha256:0123abcd</code> |
| note | a &#96;tick&#96;, a &#124; pipe and &#60;b&#62; as text<br>on two lines |

{FENCE}mermaid
gantt
    title Publish stages
    dateFormat x
    axisFormat %M:%S
    section orders
    build          :done, o1, 0, 41200
    push           :o2, after o1, 8s
    section billing-worker
    build          :b1, 1000, 30000
    smoke          :b2, after b1, 5s
    push           :b3, after b2, 6s
    section tags
    move prod      :crit, t1, 50000, 51500
{FENCE}

{FENCE}mermaid
xychart-beta
    title "Build seconds per image"
    x-axis [orders, billing, cron, auth, search, mail, pdf, thumbs, export, import, audit, notify]
    y-axis "seconds" 0 --> 60
    bar [41, 30, 12, 18, 55, 9, 23, 31, 14, 27, 8, 19]
{FENCE}

<details><summary>Build log</summary>

`[orders] ▶ build` finished in 41.2 s

</details>
"""

BROKEN_CHART = f"""\
{FENCE}mermaid
xychart-beta
    x-axis [one, two
    bar [1, 2]
{FENCE}
"""

# Parses, and draws axes but not one bar.
EMPTY_CHART = f"""\
{FENCE}mermaid
gantt
    title Nothing ran
    dateFormat x
{FENCE}
"""


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Rendered, Path]:
    png = tmp_path_factory.mktemp("render") / "summary.png"
    return render_summary(SAMPLE, png), png


def test_both_charts_of_a_summary_draw(sample: tuple[Rendered, Path]) -> None:
    rendered, _ = sample
    assert rendered.errors == ()
    assert (rendered.charts, rendered.drawn) == (2, 2)
    assert "Publish stages" in rendered.text
    assert "Build seconds per image" in rendered.text


def test_the_table_shows_escaped_text_as_itself(sample: tuple[Rendered, Path]) -> None:
    rendered, _ = sample
    assert "prod-orders@sha256:0123abcd" in rendered.text
    assert "a `tick`, a | pipe and <b> as text\non two lines" in rendered.text
    assert "<code>123456789012.dkr.ecr.eu-west-2.amazonaws.com/prod-orders@sha256:0123abcd</code>" in (
        rendered.html
    )
    assert "<summary>Build log</summary>" in rendered.html


def test_the_screenshot_is_the_whole_page(sample: tuple[Rendered, Path]) -> None:
    _, png = sample
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    assert width == VIEWPORT["width"] * SCALE
    # Both charts and the table are taller than one screen.
    assert height > VIEWPORT["height"] * SCALE


def test_broken_and_empty_charts_are_errors_and_not_drawn() -> None:
    rendered = render_summary(SAMPLE + "\n" + BROKEN_CHART + "\n" + EMPTY_CHART)
    assert (rendered.charts, rendered.drawn) == (4, 2)
    assert len(rendered.errors) == 2, rendered.errors
    assert rendered.errors[0].startswith("chart 3: Parse error on line 2:"), rendered.errors
    assert rendered.errors[1] == "chart 4: the gantt chart has no marks"


def test_scripts_in_the_markdown_never_run() -> None:
    # The scripts would write "PWNED", spelled out only at run time.
    markdown = (
        "before\n\n"
        "<script>document.body.append(String.fromCharCode(80, 87, 78, 69, 68))</script>\n\n"
        '<img src="missing.png" onerror="document.body.append(String.fromCharCode(80, 87, 78, 69, 68))">\n\n'
        "after\n"
    )
    rendered = render_summary(markdown)
    assert "PWNED" not in rendered.text
    assert "before" in rendered.text
    assert "after" in rendered.text
    assert "onerror" not in rendered.html
    # GitHub's tag filter turns the script element into text, as github.com shows it.
    assert "<script" not in rendered.html
    assert "<script>document.body.append" in rendered.text
    assert rendered.errors == ()
