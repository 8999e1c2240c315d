"""The `report` stage: a page and a flat summary of whatever dvc.yaml declares, beside the baseline commit's values."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.core.params import Params
from pipeline.report import browser
from pipeline.report.build import spread_images
from pipeline.report.collect import IMAGE_SUFFIXES, PipelineView, Plot, StageView, collect, flatten
from pipeline.report.figures import curve_series
from pipeline.report.page import fmt, folded
from pipeline.report.results import format_table, result_rows
from pipeline.report.sheets import align_rejects, thumbnail
from pipeline.report.times import format_times, read_times

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# A small pipeline of the shapes real stages declare: flat metrics, a breakdown, dvclive curves under top-level
# plots of a stage's dvclive folder with a confusion matrix and images, an image written as a plain output, and
# the report itself.
DVC_YAML = """
stages:
  crawl_faces:
    cmd: python -c "pass"
    outs:
      - data/raw/faces
      - data/raw/faces.parquet
    metrics:
      - metrics/crawl_faces.json:
          cache: false
  align:
    cmd: python -c "pass"
    deps:
      - data/raw/faces
    outs:
      - data/aligned
      - reports/align_samples.png:
          cache: false
    metrics:
      - metrics/align.json:
          cache: false
  learn:
    cmd: python -c "pass"
    deps:
      - data/aligned
    outs:
      - live
    metrics:
      - metrics/learn.json:
          cache: false
  report:
    cmd: python -m stages.report
    deps:
      - metrics/crawl_faces.json
      - metrics/align.json
      - metrics/learn.json
    outs:
      - reports/index.html:
          cache: false
    metrics:
      - metrics/summary.json:
          cache: false
plots:
  - live/plots/metrics:
      x: step
  - live/plots/sklearn/confusion.json:
      template: confusion
      x: actual
      y: predicted
  - live/plots/images
"""

BASELINE = {
    "crawl_faces": {"saved": 24, "rejected": 2, "saved_by_identity": {f"person_{i}": 3 for i in range(8)}},
    "align": {"faces": {"aligned": 20, "detection_rate": 0.8333}},
    "learn": {"test_top1": 0.5, "chance_top1": 0.125},
}
CURRENT = {
    "crawl_faces": {"saved": 30, "rejected": 2, "saved_by_identity": {f"person_{i}": 4 for i in range(8)}},
    "align": {"faces": {"aligned": 26, "detection_rate": 0.8667}},
    "learn": {"test_top1": 0.75, "chance_top1": 0.125},
}


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PYTHONPATH": str(REPO)}
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def photo(seed: int, size: tuple[int, int] = (90, 120)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.full((*size, 3), rng.integers(40, 200, 3), np.uint8)
    cv2.circle(image, (size[1] // 2, size[0] // 2), min(size) // 3, (220, 190, 160), -1)
    return image


def write_stage_outputs(root: Path, metrics: dict[str, dict]) -> None:
    """Files as the stages would leave them: metrics, manifests, photos, dvclive curves, a confusion matrix."""
    for stage, values in metrics.items():
        (root / "metrics").mkdir(exist_ok=True)
        (root / f"metrics/{stage}.json").write_text(json.dumps(values))
    rows, rejects = [], []
    for i in range(6):
        identity, name = f"person_{i % 3}", f"p{i}.png"
        (root / "data/raw/faces" / identity).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "data/raw/faces" / identity / name), photo(i))
        rows.append({"identity": identity, "path": f"{identity}/{name}", "status": "ok", "synthetic_kind": "single"})
        status, reason = ("ok", "") if i < 3 else ("rejected", "no_face" if i < 5 else "blurry")
        rejects.append({"raw_path": f"{identity}/{name}", "identity": identity, "path": f"{identity}/{name}",
                        "status": status, "reason": reason, "box_x": 10.0 if i == 5 else np.nan,
                        "box_y": 10.0, "box_w": 40.0, "box_h": 40.0})  # fmt: skip
    pd.DataFrame(rows).to_parquet(root / "data/raw/faces.parquet")
    (root / "data/aligned").mkdir(parents=True)
    pd.DataFrame(rejects).to_parquet(root / "data/aligned/faces.parquet")
    (root / "reports").mkdir(exist_ok=True)
    cv2.imwrite(str(root / "reports/align_samples.png"), photo(9, (64, 256)))
    from dvclive import Live

    live = Live(str(root / "live"), dvcyaml=False, save_dvc_exp=False, report=None)
    for step in range(5):
        live.step = step
        live.log_metric("train/loss", 2.0 / (step + 1))
        live.log_metric("val/loss", 2.2 / (step + 1))
        live.log_metric("val/top1", 0.1 * step)
        live.make_summary()
    live.log_image("samples.png", photo(3, (64, 64)))
    live.log_sklearn_plot("confusion_matrix", ["a", "a", "b", "c"], ["a", "b", "b", "c"], name="confusion.json")
    live.end()
    shutil.rmtree(root / "live/metrics.json", ignore_errors=True)


def make_repo(root: Path, commit_baseline: bool = True) -> Path:
    """A git + DVC repository with the small pipeline, a baseline commit, then changed metrics and one param."""
    root.mkdir(parents=True, exist_ok=True)
    run(["git", "init", "-q"], root)
    run([str(BIN / "dvc"), "init", "-q"], root)
    (root / "dvc.yaml").write_text(DVC_YAML)
    params = Params().model_dump(mode="json")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    write_stage_outputs(root, BASELINE)
    (root / ".gitignore").write_text("/data/\n/reports/\n/live/\n")
    if commit_baseline:
        run(["git", "add", "-A"], root)
        run(["git", "commit", "-qm", "baseline"], root)
    for stage, values in CURRENT.items():
        (root / f"metrics/{stage}.json").write_text(json.dumps(values))
    params["report"]["samples"] = 12
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small repository after `python -m stages.report` ran in it."""
    root = make_repo(tmp_path_factory.mktemp("report") / "repo")
    run([sys.executable, "-m", "stages.report"], root)
    return root


def section(page: str, stage: str) -> str:
    found = re.search(rf'<section id="stage-{stage}">(.*?)</section>', page, re.S)
    assert found, f"no section for stage {stage}"
    return found.group(1)


def row(key: str, *cells: str) -> str:
    return f'<td class="key">{key}</td>' + "".join(rf'<td class="num[^"]*">{re.escape(c)}</td>' for c in cells)


def test_summary_flattens_every_stage_but_the_report(built: Path) -> None:
    summary = json.loads((built / "metrics/summary.json").read_text())
    expected = {f"{stage}.{key}": value for stage, values in CURRENT.items() for key, value in flatten(values).items()}
    assert summary == expected


def test_metrics_stand_beside_the_baseline_with_their_change(built: Path) -> None:
    page = (built / "reports/index.html").read_text()
    assert re.search(row("saved", "30", "24", "+6"), section(page, "crawl_faces"))
    assert re.search(row("rejected", "2", "2", ""), section(page, "crawl_faces"))
    assert re.search(row("faces.detection_rate", "0.8667", "0.8333", "+0.0334"), section(page, "align"))
    assert re.search(row("chance_top1", "0.125", "0.125", ""), section(page, "learn"))
    # The per-identity breakdown is folded, and opened because it changed.
    assert re.search(r"<details open><summary>saved_by_identity \(8 values\)", section(page, "crawl_faces"))
    changes = re.search(r'<section id="changes">(.*?)</section>', page, re.S).group(1)
    assert re.search(row("report.samples", "12", "24"), changes)
    assert re.search(row("learn.test_top1", "0.75", "0.5"), changes)
    assert "crawl_faces.rejected" not in changes  # unchanged metrics are not listed
    assert "summary.json" not in page  # the report does not tabulate its own output


def test_page_is_self_contained_with_each_stage_s_pictures(built: Path) -> None:
    page = (built / "reports/index.html").read_text()
    sources = re.findall(r'<img src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/") for s in sources)
    assert not re.search(r'(src|href)="(https?:)?//', page) and "<script" not in page
    learn = section(page, "learn")
    assert "Training curves" in learn and "Confusion matrix" in learn and ">samples.png<" in learn
    assert ">align_samples.png<" in section(page, "align") and "Rejected photos, by reason" in section(page, "align")
    assert "Crawled photos" in section(page, "crawl_faces")
    assert page.count("<img ") == 6
    for stage in ("crawl_faces", "align", "learn", "report"):
        assert f'<a href="#stage-{stage}">' in page  # a box in the DAG for every stage


def test_without_history_the_page_says_there_is_no_baseline(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo", commit_baseline=False)
    run([sys.executable, "-m", "stages.report"], root)
    page = (root / "reports/index.html").read_text()
    assert "no baseline: &#x27;HEAD&#x27; is neither a commit nor a saved run" in page
    assert re.search(row("saved", "30") + "</tr>", section(page, "crawl_faces"))


def test_a_saved_run_s_folder_is_a_baseline(tmp_path: Path) -> None:
    """`i2c results --baseline profiles/hour`: a run kept as files (its metrics at the workspace's paths, its params)
    stands beside the workspace like a commit does."""
    root = make_repo(tmp_path / "repo")
    saved = root / "profiles" / "hour"
    (saved / "metrics").mkdir(parents=True)
    (saved / "metrics/learn.json").write_text(json.dumps({"test_top1": 0.9, "chance_top1": 0.125}))
    (saved / "params.yaml").write_text(yaml.safe_dump({"report": {"samples": 48}}))
    view = collect(root, "profiles/hour")
    assert view.baseline_rev == "profiles/hour" and view.baseline_note == "profiles/hour (saved run)"
    learn = view.stage("learn")
    assert learn.metrics["metrics/learn.json"]["test_top1"] == 0.75  # the workspace
    assert learn.baseline["metrics/learn.json"]["test_top1"] == 0.9  # the saved run
    assert view.stage("align").baseline == {}  # a file the saved run lacks is simply absent
    assert view.params_then == {"report.samples": 48} and view.params_now["report.samples"] == 12
    assert collect(root, "no/such/run").baseline_rev is None


def test_stage_times_stand_side_by_side_and_mark_reused_work(tmp_path: Path) -> None:
    """`i2c times`: wall and CPU seconds per stage from each run's reports/runs, a reused stage marked, the sums."""
    now, hour = tmp_path / "now", tmp_path / "hour"
    logs = {
        now: {"align": {"wall_s": 4.0, "cpu_s": 3.0, "faces": {"reused": 10}},
              "learn": {"wall_s": 100.4, "cpu_s": 190.0}},
        hour: {"align": {"wall_s": 60.0, "cpu_s": 110.0, "faces": {"reused": 0}},
               "learn": {"wall_s": 300.0, "cpu_s": 590.0, "resumed_from_step": 0}},
    }  # fmt: skip
    for root, stages in logs.items():
        (root / "reports/runs").mkdir(parents=True)
        for stage, log in stages.items():
            (root / f"reports/runs/{stage}.json").write_text(json.dumps({"stage": stage, **log}))
    (hour / "reports/runs/broken.json").write_text("{not json")  # a damaged log is skipped
    (hour / "run.json").write_text(json.dumps({"wall_s": 400.2}))
    assert read_times(now)["align"].resumed and not read_times(hour)["learn"].resumed
    lines = format_times({"now": now, "hour": hour}, ["learn", "align"]).splitlines()
    assert lines[0].split() == ["stage", "now", "wall", "/", "CPU", "s", "hour", "wall", "/", "CPU", "s"]
    assert lines[2].split() == ["learn", "100", "/", "190", "300", "/", "590"]  # dvc.yaml's order
    assert lines[3].split() == ["align", "4", "/", "3", "(reused)", "60", "/", "110"]
    assert lines[4].split() == ["sum", "of", "stages", "104", "/", "193", "360", "/", "700"]
    assert lines[5].split() == ["whole", "run", "(recorded)", "-", "400"]


def test_curves_group_train_and_val_of_one_metric(tmp_path: Path) -> None:
    for split, scale in (("train", 1.0), ("val", 2.0)):
        (tmp_path / split).mkdir()
        (tmp_path / split / "loss.tsv").write_text("timestamp\tstep\tloss\n1\t0\t" + f"{scale}\n2\t1\t{scale / 2}\n")
    plots = [Plot(f"{s}/loss.tsv", {"x": "step"}, (f"{s}/loss.tsv",)) for s in ("train", "val")]
    series = [line for plot in plots for line in curve_series(plot, tmp_path)]
    assert [(s.group, s.label) for s in series] == [("loss", "train"), ("loss", "val")]
    assert series[1].y.tolist() == [2.0, 1.0] and series[1].x.tolist() == [0.0, 1.0]
    named = Plot("Loss", {"x": "step", "y": {"train/loss.tsv": "loss", "val/loss.tsv": "loss"}}, ("train/loss.tsv",))
    assert [s.group for s in curve_series(named, tmp_path)] == ["Loss"]


def test_only_long_breakdowns_fold() -> None:
    keys = ["saved", *[f"saved_by_identity.p{i}" for i in range(7)], *[f"rejected_by_reason.r{i}" for i in range(3)]]
    assert folded(keys) == {"saved_by_identity": [f"saved_by_identity.p{i}" for i in range(7)]}
    assert folded(["faces.aligned", *[f"faces.k{i}" for i in range(9)]]) == {}
    assert (fmt(1234567), fmt(0.86666666), fmt(True), fmt(None)) == ("1,234,567", "0.866667", "true", "—")


def test_rejects_sheet_has_a_row_per_reason(built: Path) -> None:
    params = Params()
    sheet = align_rejects(params, built, 24)
    assert sheet is not None and "3 of 6 photos rejected" in sheet.caption
    assert sheet.image.shape[0] == 2 + 2 * (128 + 2)  # no_face and blurry
    (built / "data/raw/faces/person_2/p5.png").rename(built / "p5.png")
    try:
        with pytest.raises(ValueError, match=r"person_2/p5.png is missing or not an image"):
            align_rejects(params, built, 24)
    finally:
        (built / "p5.png").rename(built / "data/raw/faces/person_2/p5.png")
    assert thumbnail(built / "data/raw/faces/person_0/p0.png", side=64).shape == (64, 64, 3)


def _resolve(text: str, params: dict) -> str:
    def value(match: re.Match[str]) -> str:
        node: object = params
        for part in match.group(1).split("."):
            node = node[part]  # type: ignore[index]
        return str(node)

    return re.sub(r"\$\{([\w.]+)\}", value, text)


def _paths(entries: list) -> list[str]:
    """The paths of dvc.yaml output or plot entries (`path`, `{path: props}`, or a named plot's `y` files)."""
    paths = []
    for entry in entries:
        name, props = (entry, None) if isinstance(entry, str) else next(iter(entry.items()))
        y = (props or {}).get("y")
        paths += list(y) if isinstance(y, dict) else [name]
    return paths


def test_report_deps_cover_every_metric_plot_and_image_of_the_pipeline() -> None:
    """A stage added to dvc.yaml must also add its metrics, plots and images to the report's deps."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    pipeline = yaml.safe_load(_resolve((REPO / "dvc.yaml").read_text(), params))
    deps = [str(d) for d in pipeline["stages"]["report"]["deps"]]
    wanted = _paths(pipeline.get("plots", []))
    for name, stage in pipeline["stages"].items():
        if name != "report":
            wanted += _paths(stage.get("metrics", []) + stage.get("plots", []))
            wanted += [p for p in _paths(stage.get("outs", [])) if p.lower().endswith(IMAGE_SUFFIXES)]
    missing = [path for path in wanted if not any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)]
    assert not missing, f"the report stage's deps in dvc.yaml lack: {missing}"


@pytest.fixture(scope="module")
def chromium() -> str:
    found = browser.find_chromium()
    if found is None:
        pytest.skip("no Chromium installed (Debian: apt-get install chromium); .ci/run installs it")
    return found


def test_page_in_a_real_browser(built: Path, chromium: str, tmp_path: Path) -> None:
    page = built / "reports/index.html"
    check = browser.inspect_page(page, chromium)
    assert (check.images, check.broken) == (6, [])
    expected = {stage: flatten(values) for stage, values in CURRENT.items()}
    assert browser.missing_metrics(check, expected) == []
    assert "saved_by_identity.person_0\t4\t3\t+1" in check.sections["stage-crawl_faces"]  # changed: unfolded
    shot = browser.screenshot(page, tmp_path / "shot.png", chromium, height=1200)
    image = cv2.imread(str(shot))
    assert image.shape == (1200, 1280, 3) and image.std() > 10  # drawn, not a blank window


def test_browser_check_finds_a_broken_image_and_a_missing_metric(built: Path, chromium: str, tmp_path: Path) -> None:
    page = (built / "reports/index.html").read_text()
    broken = re.sub(r'src="data:image/png;base64,[^"]{40}', 'src="data:image/png;base64,AAAA', page, count=1)
    broken = re.sub(r'<tr><td class="key">rejected</td>.*?</tr>', "", broken, count=1)
    (tmp_path / "index.html").write_text(broken)
    check = browser.inspect_page(tmp_path / "index.html", chromium)
    assert len(check.broken) == 1
    problems = browser.missing_metrics(check, {stage: flatten(values) for stage, values in CURRENT.items()})
    assert problems == ["stage crawl_faces: metric rejected = 2 is not shown"]


def test_a_folder_of_many_images_shows_a_few_from_first_to_last(tmp_path: Path) -> None:
    files = [f"live/plots/images/step_{i}.png" for i in range(0, 120, 10)] + ["reports/one.png", "reports/gone.png"]
    for file in files[:-1]:
        (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / file).write_bytes(b"png")
    picked = spread_images(files, tmp_path, per_folder=4)
    assert [f for f, _ in picked] == [
        "live/plots/images/step_0.png",
        "live/plots/images/step_40.png",
        "live/plots/images/step_70.png",
        "live/plots/images/step_110.png",
        "reports/one.png",
    ]
    assert picked[0][1] == "live/plots/images/step_0.png (4 of the 12 images in its folder)"
    assert picked[-1] == ("reports/one.png", "reports/one.png")


def test_results_put_each_headline_beside_its_chance_and_the_baseline() -> None:
    """`i2c results` and the page's Results table: the headline numbers, what they read against, the change."""
    f_now = {"test_top1": 0.9, "chance_top1": 0.02, "test_top5": 1.0, "chance_top5": 0.1}
    dtn = {"traits_read": 2, "traits_compared": 7}
    view = PipelineView(
        stages=[
            StageView("pretrain_f", metrics={"metrics/pretrain_f.json": f_now},
                      baseline={"metrics/pretrain_f.json": {**f_now, "test_top1": 0.8}}),
            StageView("train_dtn", metrics={"metrics/dtn.json": dtn}),
            StageView("learn", metrics={"metrics/learn.json": {"test_top1": 0.5}}),  # no headlines: no rows
        ],
        edges=[], baseline_rev="abc", baseline_note="HEAD (abc)", params_now={}, params_then={},
    )  # fmt: skip
    rows = result_rows(view)
    assert [(r.stage, r.label, r.value, r.against, r.baseline, r.change) for r in rows] == [
        ("pretrain_f", "test top-1", 0.9, "chance 0.02", 0.8, "+0.1"),
        ("pretrain_f", "test top-5", 1.0, "chance 0.1", 1.0, ""),
        ("train_dtn", "traits >= chance + 0.25 (held-out people)", 2, "of 7", None, "new"),
    ]
    lines = format_table(rows, "HEAD (abc)").splitlines()
    assert lines[0].split() == ["stage", "metric", "value", "against", "HEAD", "(abc)", "change"]
    assert lines[2].split() == ["pretrain_f", "test", "top-1", "0.9", "chance", "0.02", "0.8", "+0.1"]
    assert lines[3].startswith(" ") and lines[3].split()[:2] == ["test", "top-5"]  # the stage is named once
    without = PipelineView(view.stages, [], None, "no baseline", {}, {})
    assert {r.change for r in result_rows(without)} == {""} and {r.baseline for r in result_rows(without)} == {None}


def test_the_page_opens_with_the_results_table(built: Path) -> None:
    page = (built / "reports/index.html").read_text()
    assert page.index('<section id="results">') < page.index('<section id="changes">')
