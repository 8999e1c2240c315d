"""The pack stage's library: shards, index, labels, leak-free splits, letterbox boxes, byte-identical re-packs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import pandas as pd
import pytest

from pipeline.core.params import PackParams
from pipeline.core.schema import TRAIT_COLUMNS
from pipeline.core.viz import letterbox
from pipeline.crawl.face_store import hamming
from pipeline.dataset.shards import PackError, PackInputs, pack

IDENTITIES = {"Ann Lee": 12, "Bob Ray": 10, "Cy Few": 3}


def _png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _flip_bits(hex_hash: str, bits: int) -> str:
    return f"{int(hex_hash, 16) ^ ((1 << bits) - 1):064x}"


class Packing(NamedTuple):
    params: PackParams
    inputs: PackInputs

    @property
    def out_dir(self) -> Path:
        return Path(self.params.out_dir)


def make_aligned(root: Path, seed: int = 0) -> Packing:
    """A small align-stage output: faces (one identity too small, near-duplicates, a shared photo) and avatars."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, count in IDENTITIES.items():
        folder = name.lower().replace(" ", "_")
        for i in range(count):
            sha = f"{len(rows):02d}" + f"{rng.integers(1 << 62):062x}"[-62:]
            width, height = int(rng.integers(60, 120)), int(rng.integers(60, 120))
            _png(root / "raw" / folder / f"{sha}.png", rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
            _png(root / "aligned" / "faces" / folder / f"{sha}.png", rng.integers(0, 255, (152, 152, 3), np.uint8))
            rows.append(
                {
                    "source_sha256": sha,
                    "identity": name,
                    "folder": folder,
                    "status": "ok",
                    "reason": "",
                    "path": f"{folder}/{sha}.png",
                    "raw_path": f"{folder}/{sha}.png",
                    "dhash": rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex(),
                    "box_x": 5.0 + i,
                    "box_y": 6.0,
                    "box_w": 30.0,
                    "box_h": 32.0,
                    "synthetic": True,
                    **{t: int(rng.integers(0, 5)) for t in TRAIT_COLUMNS},
                }
            )
    rows[1]["dhash"] = _flip_bits(rows[0]["dhash"], 3)  # Ann 0 ~ Ann 1
    rows[13]["dhash"] = _flip_bits(rows[2]["dhash"], 5)  # Bob 1 ~ Ann 2: one photo crawled for two people
    rows.append(dict(rows[-1], status="rejected", reason="no_face", path=""))
    rows.append(dict(rows[4]))  # the same bytes listed twice for one identity
    faces = pd.DataFrame(rows)
    for trait in TRAIT_COLUMNS:
        faces[trait] = faces[trait].astype("Int64")
    faces.to_parquet(root / "aligned" / "faces.parquet")
    avatars = []
    for i in range(15):
        sha = f"{i:064x}"
        _png(root / "aligned" / "avatars" / f"{sha}.png", rng.integers(0, 255, (152, 152, 3), dtype=np.uint8))
        avatars.append(
            {
                "source_sha256": sha,
                "status": "ok",
                "reason": "",
                "path": f"{sha}.png",
                "key": f"k{i}",
                **{t: int(rng.integers(0, 5)) for t in TRAIT_COLUMNS},
            }
        )
    pd.DataFrame(avatars).to_parquet(root / "aligned" / "avatars.parquet")
    params = PackParams(
        out_dir=str(root / "shards"),
        shard_size=4,
        photo_size=64,
        val_fraction=0.2,
        test_fraction=0.2,
        min_faces_per_identity=5,
    )
    return Packing(params, PackInputs(root / "aligned", root / "raw"))


@pytest.fixture
def packed(tmp_path: Path) -> tuple[Packing, dict]:
    cfg = make_aligned(tmp_path)
    return cfg, pack(*cfg)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_pack_writes_shards_index_labels_and_metrics(packed: tuple[Packing, dict]) -> None:
    cfg, metrics = packed
    faces = pd.read_parquet(cfg.out_dir / "faces" / "index.parquet")
    assert len(faces) == 22 and set(faces["identity"]) == {"Ann Lee", "Bob Ray"}
    labels = json.loads((cfg.out_dir / "labels.json").read_text())
    assert labels["labels"] == {"0": "Ann Lee", "1": "Bob Ray"} and labels["dropped"]["Cy Few"].startswith("3 aligned")
    for _, row in faces.iterrows():
        shard = np.load(cfg.out_dir / "faces" / row["shard"], mmap_mode="r")
        assert shard.dtype == np.uint8 and shard.shape[1:] == (152, 152, 3) and len(shard) <= cfg.params.shard_size
        crop = cv2.cvtColor(cv2.imread(str(cfg.inputs.aligned_dir / row["source"])), cv2.COLOR_BGR2RGB)
        assert np.array_equal(shard[row["offset"]], crop)
        assert row["label"] == {"Ann Lee": 0, "Bob Ray": 1}[row["identity"]]
    assert faces["gender"].dtype == "Int64"
    assert metrics["identities"] == 2 and metrics["identities_dropped"] == 1
    assert metrics["faces_in_dropped_identities"] == 3 and metrics["duplicate_rows"] == 1
    assert metrics["near_duplicate_clusters"] == 2 and metrics["shared_clusters"] == 1
    assert sum(metrics[f"faces_{s}"] for s in ("train", "val", "test")) == metrics["faces_total"] == len(faces)
    assert metrics["photos_total"] == len(faces) and metrics["avatars_total"] == 15
    assert metrics["bytes"] == sum(p.stat().st_size for p in cfg.out_dir.rglob("*.npy"))
    avatars = pd.read_parquet(cfg.out_dir / "avatars" / "index.parquet")
    assert set(avatars["split"]) == {"train", "val", "test"} and (avatars["label"] == -1).all()


def test_no_photo_lands_in_two_splits(packed: tuple[Packing, dict]) -> None:
    cfg, _ = packed
    faces = pd.read_parquet(cfg.out_dir / "faces" / "index.parquet")
    for i, a in faces.iterrows():
        for _, b in faces.iloc[i + 1 :].iterrows():
            if a["split"] != b["split"]:
                assert a["sha256"] != b["sha256"]
                assert hamming(a["dhash"], b["dhash"]) > cfg.params.near_duplicate_distance
    per_identity = faces.groupby("identity")["split"].value_counts().unstack()
    assert (per_identity > 0).all().all()  # stratified: every identity in every split


def test_repack_is_byte_identical_and_prunes_stale_shards(packed: tuple[Packing, dict]) -> None:
    cfg, metrics = packed
    before = _snapshot(cfg.out_dir)
    assert pack(*cfg) == metrics
    assert _snapshot(cfg.out_dir) == before
    pack(cfg.params.model_copy(update={"shard_size": 100}), cfg.inputs)
    assert sorted(p.name for p in (cfg.out_dir / "faces").iterdir()) == [
        "index.parquet",
        "test-00000.npy",
        "train-00000.npy",
        "val-00000.npy",
    ]


def test_photos_hold_letterboxed_raw_photos_with_boxes_in_shard_pixels(packed: tuple[Packing, dict]) -> None:
    cfg, _ = packed
    photos = pd.read_parquet(cfg.out_dir / "photos" / "index.parquet")
    faces = pd.read_parquet(cfg.out_dir / "faces" / "index.parquet")
    assert list(photos["sha256"]) == list(faces["sha256"])  # same samples, same order
    source = pd.read_parquet(cfg.inputs.aligned_dir / "faces.parquet").set_index("source_sha256")
    row = photos.iloc[0]
    raw = cv2.cvtColor(cv2.imread(str(cfg.inputs.raw_faces_dir / row["source"])), cv2.COLOR_BGR2RGB)
    expected, fit = letterbox(raw, cfg.params.photo_size)
    assert np.array_equal(np.load(cfg.out_dir / "photos" / row["shard"])[row["offset"]], expected)
    raw_box = source.loc[row["sha256"], ["box_x", "box_y", "box_w", "box_h"]].astype(float)
    assert np.allclose(row[["box_x", "box_y", "box_w", "box_h"]].astype(float), fit.box(*raw_box))


def test_letterbox_maps_a_known_box() -> None:
    raw = np.zeros((100, 200, 3), np.uint8)
    raw[10:40, 20:60] = 255  # the box (x 20, y 10, w 40, h 30)
    image, fit = letterbox(raw, 100)
    assert (fit.scale_x, fit.scale_y, fit.pad_x, fit.pad_y) == (0.5, 0.5, 0, 25)
    assert fit.box(20, 10, 40, 30) == (10, 30, 20, 15)
    assert image[25:75].any() and not image[:25].any() and not image[75:].any()  # bars above and below
    assert (image[31:44, 11:29] == 255).all() and not image[46:, 31:].any()
    tall, fit = letterbox(np.zeros((80, 40, 3), np.uint8), 64)
    assert tall.shape == (64, 64, 3) and (fit.pad_x, fit.pad_y) == (16, 0) and fit.box(0, 0, 40, 80) == (16, 0, 32, 64)


def test_missing_inputs_say_which_stage_to_run(tmp_path: Path) -> None:
    with pytest.raises(PackError, match=r"faces.parquet not found; run `dvc repro align`"):
        pack(PackParams(out_dir=str(tmp_path / "out")), PackInputs(tmp_path / "nothing", tmp_path / "raw"))


def test_stage_main_packs_and_writes_flat_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.core.params import parse_params
    from stages import pack as stage

    cfg = make_aligned(tmp_path)
    section = cfg.params.model_dump(mode="json")
    aligned, raw = str(cfg.inputs.aligned_dir), str(cfg.inputs.raw_faces_dir)
    section["metrics"] = str(tmp_path / "metrics" / "pack.json")
    section["details"] = str(tmp_path / "reports" / "details.json")
    section["run_log"] = str(tmp_path / "reports" / "run.json")

    def params(aligned_dir: str) -> object:
        return parse_params({"align": {"out_dir": aligned_dir}, "crawl": {"faces": {"out_dir": raw}}, "pack": section})

    monkeypatch.setattr(stage, "load_params", lambda: params(aligned))
    stage.main()
    metrics = json.loads((tmp_path / "metrics" / "pack.json").read_text())
    # few numbers describing the shards: 22 faces of the 2 kept identities (+1 listed twice), 3 of a dropped one
    details = json.loads((tmp_path / "reports" / "details.json").read_text())
    assert details["faces_train"] + details["faces_val"] + details["faces_test"] == 22
    faces = {"kept": 22, "rejected": 4, "val": details["faces_val"], "test": details["faces_test"]}
    held = {"val": 0, "test": 0}  # two people: both are needed to train on
    assert metrics == {"faces": faces, "avatars": {"kept": 15, "rejected": 0}, "identities": 2, "held_out_people": held}
    assert json.loads((tmp_path / "reports" / "run.json").read_text())["status"] == "ok"
    monkeypatch.setattr(stage, "load_params", lambda: params(str(tmp_path / "missing")))
    with pytest.raises(SystemExit) as exit_info:
        stage.main()
    assert exit_info.value.code == 1
    run_log = json.loads((tmp_path / "reports" / "run.json").read_text())
    assert run_log["status"] == "failed" and "run `dvc repro align` first" in run_log["message"]
