"""The `align` stage end to end on a small sandbox crawl: manifests, rejects, avatars on the template, resume."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.core.params import AlignParams, Params, parse_params
from pipeline.crawl.avatars import crawl_avatars
from pipeline.crawl.faces import crawl_faces
from pipeline.faces.align import align_face
from pipeline.faces.align_run import run_align
from pipeline.sandbox.photo import photo_kind, render_photo

REPO = Path(__file__).resolve().parents[1]


def small_params(root: Path, workers: int = 2) -> Params:
    raw = {
        "crawl": {
            "faces": {
                "identities": ["Avery Quinn", "Blake Moreno"],
                "per_identity": 16,
                "min_per_identity": 1,
                "out_dir": str(root / "raw/faces"),
                "manifest": str(root / "raw/faces.parquet"),
                "metrics": str(root / "m/faces.json"),
            },
            "avatars": {
                "count": 12,
                "out_dir": str(root / "raw/avatars"),
                "manifest": str(root / "raw/avatars.parquet"),
                "metrics": str(root / "m/avatars.json"),
            },
        },
        "align": {
            "out_dir": str(root / "aligned"),
            "metrics": str(root / "m/align.json"),
            "workers": workers,
            "chunk_size": 4,
            "samples": str(root / "align_samples.png"),
        },
    }
    return parse_params(raw)


@pytest.fixture(scope="module")
def crawled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("align")
    params = small_params(root)
    crawl_faces(params.crawl.faces, params.sandbox, progress=False)
    crawl_avatars(params.crawl.avatars, params.sandbox, progress=False)
    return root


def digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_stage_aligns_both_domains_deterministically_and_resumes(crawled: Path) -> None:
    params = small_params(crawled)
    report = run_align(params, progress=False)
    aligned = crawled / "aligned"
    faces = pd.read_parquet(aligned / "faces.parquet")
    avatars = pd.read_parquet(aligned / "avatars.parquet")
    raw_ok = pd.read_parquet(crawled / "raw/faces.parquet").query("status == 'ok'")
    assert len(faces) == len(raw_ok) == report.faces.input
    assert report.faces.aligned == (faces.status == "ok").sum() > 0
    assert (faces.loc[faces.status != "ok", "reason"] != "").all()
    assert len(avatars) == 12 and (avatars.status == "ok").all() and (avatars.eye_method == "renderer").all()
    for frame, folder in ((faces, "faces"), (avatars, "avatars")):
        for path in frame.loc[frame.status == "ok", "path"]:
            assert (aligned / folder / path).is_file()
    ok = faces[faces.status == "ok"]
    assert ok[["box_x", "box_y", "box_w", "box_h", "left_eye_x", "right_eye_y"]].notna().all().all()
    assert ok["glasses"].notna().all() and ok["dhash"].str.len().eq(64).all()

    before = digest(aligned)
    for path in list(ok["path"])[:2]:
        (aligned / "faces" / path).unlink()  # a crop deleted by hand is made again
    (aligned / "faces" / ok["path"].iloc[2]).write_bytes(b"")  # so is one emptied by hand
    again = run_align(params, progress=False)
    assert digest(aligned) == before
    assert again.faces.work == {"reused": report.faces.input - 3, "computed": 3, "pruned": 0}
    (aligned / "faces.parquet").unlink()  # as if killed before the manifest was written: all made again, the same
    assert run_align(params, progress=False).faces.work["computed"] == report.faces.input
    assert digest(aligned) == before


def test_corrupt_raw_photo_is_a_recorded_reject(crawled: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(crawled / "raw", root / "raw")
    raw = pd.read_parquet(root / "raw/faces.parquet").query("status == 'ok'")
    victim = root / "raw/faces" / raw.iloc[0]["path"]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 3])
    run_align(small_params(root, workers=1), progress=False)
    faces = pd.read_parquet(root / "aligned/faces.parquet").set_index("source_sha256")
    assert faces.loc[raw.iloc[0]["sha256"], "reason"] == "decode_error"


def test_synthetic_photos_align_to_their_known_eyes() -> None:
    """Detected eyes against the renderer's ground truth, in inter-ocular distances (NME)."""
    errors, upright = [], []
    for name in ("avery_quinn", "blake_moreno", "casey_lindqvist", "dana_okafor", "eli_brandt"):
        for index in range(12):
            if photo_kind(name, index, 0) != "single":
                continue
            render = render_photo(name, index, 0)
            result = align_face(render.image, AlignParams())
            if result.status != "ok":
                continue
            truth = render.faces[0]
            iod = math.dist(truth.left_eye, truth.right_eye)
            errors.append(
                max(math.dist(result.left_eye, truth.left_eye), math.dist(result.right_eye, truth.right_eye)) / iod
            )
            true_roll = math.degrees(
                math.atan2(truth.right_eye[1] - truth.left_eye[1], truth.right_eye[0] - truth.left_eye[0])
            )
            upright.append(abs(result.angle_deg - true_roll))
    assert len(errors) >= 30
    assert float(np.median(errors)) < 0.15 and float(np.quantile(errors, 0.9)) < 0.35
    assert float(np.median(upright)) < 4.0


def test_bad_align_params_fail_with_the_dotted_key() -> None:
    from pipeline.core.params import ParamsError

    with pytest.raises(ParamsError, match=r"align: Value error, left_eye"):
        parse_params({"align": {"left_eye": [0.7, 0.35], "right_eye": [0.3, 0.35]}})
    with pytest.raises(ParamsError, match=r"align.multiple_faces: Input should be .reject. or .largest."):
        parse_params({"align": {"multiple_faces": "all"}})
    # the sandbox serves only the loopback interface: another host is refused before anything binds
    with pytest.raises(ParamsError, match=r"sandbox.host: Input should be '127.0.0.1' \(got '0.0.0.0'\)"):
        parse_params({"sandbox": {"host": "0.0.0.0"}})


def test_sample_sheet_spreads_over_identities() -> None:
    from pipeline.faces.align_run import spread_sample

    frame = pd.DataFrame({"identity": ["a"] * 30 + ["b"] * 3 + ["c"] * 1, "path": [f"{i:02d}.png" for i in range(34)]})
    picked = spread_sample(frame, 6)
    owner = dict(zip(frame["path"], frame["identity"], strict=True))
    assert [owner[p] for p in picked] == ["a", "b", "c", "a", "b", "a"]
    assert spread_sample(frame.drop(columns="identity"), 2) == ["00.png", "01.png"]  # avatars have no identity


def test_pool_workers_import_neither_pandas_nor_skimage():
    # a spawned worker imports align_tasks; pandas and skimage would add ~0.7 s of CPU to every worker's start
    code = "import sys, pipeline.faces.align_tasks; print(sorted({'pandas', 'skimage'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_pool_workers_do_not_reimport_the_parents_main(tmp_path: Path) -> None:
    # a spawned worker re-imports the parent's __main__ (stages.align: pandas, pyarrow) unless align_run hides it
    script = tmp_path / "parent.py"
    script.write_text(
        "import multiprocessing\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "import pandas\n"
        "from pipeline.faces.align_run import _main_hidden\n"
        "if __name__ == '__main__':\n"
        "    probe = \"'pandas' in __import__('sys').modules\"\n"
        "    for hide in (False, True):\n"
        "        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context('spawn')) as pool:\n"
        "            if hide:\n"
        "                with _main_hidden():\n"
        "                    future = pool.submit(eval, probe)\n"
        "            else:\n"
        "                future = pool.submit(eval, probe)\n"
        "            print(future.result())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["True", "False"]
