"""`make bench`: run every benchmark in one go, write bench/results/*.md and refresh the tables in README.md."""

from __future__ import annotations

import argparse
import platform
import re
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def avatars_table(result: dict[str, Any]) -> str:
    rows = result["rows"]
    lines = [
        f"Same {result['n']} sandbox avatar URLs crawled every way, {result['cores']} cores, the server in its own "
        f"process; first on loopback, then with {result['latency_ms']:g} ms mean server latency, as over a real "
        f"network ({platform.python_implementation()} {platform.python_version()}, {date.today()}).",
        "",
        "| method | wall s | to last file s | avatars/s | vs best icrawler (same scenario) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        scenario = r["method"].split(":")[0]
        icrawlers = [b for b in rows if b["method"].startswith(scenario + ": icrawler")]
        baseline = max(icrawlers, key=lambda b: b["per_s"])
        lines.append(
            f"| {r['method']} | {r['seconds']:.2f} | {r['to_last_file']:.2f} | {r['per_s']:.0f} | "
            f"{r['per_s'] / baseline['per_s']:.2f}x |"
        )
    c = result["costs"]
    lines += [
        "",
        f"Per avatar: server render {c['render_ms']:.2f} ms + PNG encode {c['encode_ms']:.2f} ms; "
        f"client validation (full decode) {c['validate_ms']:.2f} ms + sha256 and atomic write "
        f"{c['hash_write_ms']:.2f} ms; {c['kb_per_avatar']:.1f} KB each.",
        "icrawler rates use the time to its last file, not its idle wait before the threads exit.",
    ]
    return "\n".join(lines) + "\n"


def update_readme(name: str, table: str) -> None:
    """Replace the block between <!-- bench:NAME --> markers in README.md."""
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    pattern = re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", re.S)
    if not pattern.search(text):
        print(f"README.md has no <!-- bench:{name} --> block; table only in bench/results/{name}.md")
        return
    readme.write_text(pattern.sub(lambda m: m.group(1) + table + m.group(2), text), encoding="utf-8")


def main() -> None:
    from bench import align, avatars, frozen_f, loader, train

    benches: dict[str, tuple[Callable[..., dict[str, Any]], Callable[[dict[str, Any]], str]]] = {
        "avatars": (avatars.run, avatars_table),
        "align": (align.run, align.align_table),
        "loader": (loader.run, loader.loader_table),
        "train": (train.run, train.train_table),
        "frozen_f": (frozen_f.run, frozen_f.frozen_f_table),
    }
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run, from {sorted(benches)} (default: all)")
    parser.add_argument("--n", type=int, default=None, help="override the item count of each benchmark")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(args.names) - set(benches))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {sorted(benches)}")
    for name in args.names or list(benches):
        run, table = benches[name]
        print(f"== bench {name} ==", flush=True)
        result = run(**({"n": args.n} if args.n else {}))
        text = table(result)
        (RESULTS / f"{name}.md").write_text(text, encoding="utf-8")
        update_readme(name, text)
        print(text, flush=True)


if __name__ == "__main__":
    main()
