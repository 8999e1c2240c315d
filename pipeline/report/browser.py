"""Open the report in headless Chromium: every image decodes, and each stage's key metrics are on screen.

Usage: python -m pipeline.report.browser [reports/index.html] [--screenshot out.png]
(exits 1 naming each problem; 2 when no Chromium is installed: `apt-get install chromium` on Debian).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any

from pipeline.report.page import fmt, folded

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)

# Appended to a copy of the page (the page itself has no script): after `load`, record which images did not
# decode and what each stage section shows as text (innerText leaves out folded <details> and hidden parts).
PROBE = """<script>
addEventListener("load", () => {
  const images = [...document.images];
  const sections = {};
  for (const s of document.querySelectorAll("section[id]")) sections[s.id] = s.innerText;
  const out = document.createElement("pre");
  out.id = "report-probe";
  out.textContent = JSON.stringify({
    images: images.length,
    broken: images.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt || i.src.slice(0, 40)),
    sections: sections,
  });
  document.body.appendChild(out);
});
</script>"""


class BrowserError(RuntimeError):
    """Chromium could not load the page."""


@dataclass(frozen=True)
class PageCheck:
    """What a real browser made of the page."""

    images: int
    broken: list[str]
    sections: dict[str, str]  # section id -> its rendered text


def find_chromium() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def _run(chromium: str, profile: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    command = [chromium, *FLAGS, f"--user-data-dir={profile}", *args]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BrowserError(f"{chromium} did not finish within {timeout:.0f} s: {' '.join(command)}") from exc


def inspect_page(page: Path, chromium: str) -> PageCheck:
    """Load a probed copy of `page` in headless Chromium and read back what it rendered.

    Raises:
        BrowserError: when Chromium fails or the probe's result is missing from the DOM it dumped.
    """
    with tempfile.TemporaryDirectory(prefix="report-browser-") as tmp:
        probed = Path(tmp) / page.name
        probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
        result = _run(chromium, str(Path(tmp) / "profile"), "--virtual-time-budget=5000", "--dump-dom", probed.as_uri())
    found = re.search(r'<pre id="report-probe">(.*?)</pre>', result.stdout, re.S)
    if result.returncode != 0 or not found:
        raise BrowserError(f"{chromium} could not render {page} (exit {result.returncode}): {result.stderr[-800:]}")
    probe = json.loads(unescape(found.group(1)))
    return PageCheck(probe["images"], probe["broken"], probe["sections"])


def screenshot(page: Path, out: Path, chromium: str, width: int = 1280, height: int = 4000) -> Path:
    """A PNG of the top `height` pixels of the page as Chromium draws it."""
    with tempfile.TemporaryDirectory(prefix="report-browser-") as tmp:
        size, target = f"--window-size={width},{height}", f"--screenshot={out.resolve()}"
        result = _run(chromium, str(Path(tmp) / "profile"), size, target, page.resolve().as_uri())
    if result.returncode != 0 or not out.is_file():
        raise BrowserError(f"{chromium} wrote no screenshot of {page}: {result.stderr[-800:]}")
    return out


def key_metrics(values: Mapping[str, Any]) -> dict[str, Any]:
    """The flat metrics a stage's section shows as rows: all but the folded breakdowns."""
    hidden = {k for members in folded(list(values)).values() for k in members}
    return {k: v for k, v in values.items() if k not in hidden}


def missing_metrics(check: PageCheck, metrics: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Each stage's metrics that its section does not show as a `key  value` row (folded breakdowns aside).

    Args:
        check: what the browser rendered.
        metrics: stage name -> {flat metric key: value}.
    """
    problems = []
    for stage, values in metrics.items():
        text = check.sections.get(f"stage-{stage}")
        if text is None:
            problems.append(f"stage {stage}: no section on the page")
            continue
        rows = {tuple(line.split("\t")[:2]) for line in text.splitlines()}
        for key, value in key_metrics(values).items():
            if (key, fmt(value)) not in rows:
                problems.append(f"stage {stage}: metric {key} = {fmt(value)} is not shown")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", nargs="?", type=Path, default=Path("reports/index.html"))
    parser.add_argument("--summary", type=Path, default=Path("metrics/summary.json"))
    parser.add_argument("--screenshot", type=Path, help="also write a PNG of the page here")
    args = parser.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print(f"report check: no Chromium (tried {', '.join(BROWSERS)}); apt-get install chromium", file=sys.stderr)
        return 2
    check = inspect_page(args.page, chromium)
    expected: dict[str, dict[str, Any]] = {}
    for dotted, value in json.loads(args.summary.read_text()).items():
        stage, _, key = dotted.partition(".")
        expected.setdefault(stage, {})[key] = value
    problems = [f"image did not load: {name}" for name in check.broken] + missing_metrics(check, expected)
    if args.screenshot:
        screenshot(args.page, args.screenshot, chromium)
    for problem in problems:
        print(f"report check: {problem}", file=sys.stderr)
    shown = sum(len(key_metrics(v)) for v in expected.values())
    print(
        f"report check: {'FAILED' if problems else 'ok'}: {args.page} in {Path(chromium).name}, {check.images} images "
        f"({len(check.broken)} broken), {shown} key metrics of {len(expected)} stages looked for"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
