"""`train_avatar_params`: avatar API parameters from a photo, learnt by a small CNN of its own on photo-like variants
of the crawled avatars, judged on people no stage trained on; the emoji is the avatar engine's own render of the
predicted parameters."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch

from pipeline.core.checkpoint import CheckpointError
from pipeline.core.params import resolved
from pipeline.core.reuse import code_version
from pipeline.core.runner import StageError
from pipeline.core.traits import AvatarSpec, catalogue_options, make_spec
from pipeline.core.viz import image_grid
from pipeline.dataset.loader import ShardDataset, all_images, to_model_input, to_uint8_images
from pipeline.dataset.randomize import Randomize, randomize_avatars
from pipeline.evaluate.avatar_params import (
    MARGIN,
    key_accuracy,
    mean_balanced,
    predict_specs,
    score_table,
    trait_scores,
    traits_read,
)
from pipeline.evaluate.dtn import generate
from pipeline.models.avatar_params import AvatarReader, class_targets, save_avatar_params
from pipeline.models.dtn import load_generator
from pipeline.models.face_encoder import load_f
from pipeline.sandbox.avatar import render_avatar
from pipeline.train.checkpoint import RunKey, loop_params
from pipeline.train.loop import lr_factor
from pipeline.train.skeleton import ModelStage, Networks

NOT_SHAPING = ("log_every", "eval_every", "checkpoint_every", "skin_tone_bins", "grid_people", "model", "metrics")
NOT_SHAPING += ("details", "run_log", "live_dir", "checkpoint_dir")
WARMUP_STEPS = 20
# The randomisation of f's avatar task, with weaker exposure and gamma jitter (0.15 instead of 0.4): skin tone is a
# brightness, and on the val people it read 0.91 instead of 0.61 (mean balanced accuracy 0.79 instead of 0.75).
PHOTO_LIKE = Randomize(exposure=0.15, gamma=0.15)
GRID_SIDE = 96


@dataclass(frozen=True)
class AvatarData:
    """The avatars (known parameters) the heads learn from, and the held-out people they are judged on.

    `shown` holds the photos of the people grid and `per_person`: the held-out test people, or the photo test split
    when pack holds no one out (the heads never train on a photo, but trait verdicts then stay unmade).
    """

    avatars: dict[str, ShardDataset]  # train, val, test
    people_val: ShardDataset
    people_test: ShardDataset
    shown: ShardDataset
    data_id: str


def read_data(shards: Path) -> AvatarData:
    """Open the avatar splits and the held-out people's faces under `shards` (checksums verified).

    Raises:
        StageError: when there are no train avatars, or no test photo at all to show.
        pipeline.dataset.loader.ShardError: for a missing or damaged shard.
    """
    avatars = {split: ShardDataset(shards / "avatars", split) for split in ("train", "val", "test")}
    faces = shards / "faces"
    people_val, people_test = ShardDataset(faces, "people_val"), ShardDataset(faces, "people_test")
    if len(avatars["train"]) == 0:
        raise StageError(f"the avatar train split under {shards} is empty; raise crawl.avatars.count")
    shown = people_test if len(people_test) else ShardDataset(faces, "test")
    if len(shown) == 0:
        raise StageError(
            f"no test photos under {shards}, of held-out people or others: nothing to draw avatars for; "
            "raise pack.people_test_fraction or pack.test_fraction (and crawl.faces.identities)"
        )
    digest = hashlib.sha256()
    for root in (shards / "avatars", faces):
        index = pd.read_parquet(root / "index.parquet", columns=["shard", "shard_sha256"]).drop_duplicates("shard")
        for row in index.sort_values("shard").itertuples():
            digest.update(f"{root.name}/{row.shard}:{row.shard_sha256}\n".encode())
    return AvatarData(avatars, people_val, people_test, shown, digest.hexdigest()[:16])


class TrainAvatarParams(ModelStage):
    """An `AvatarReader` (a small CNN and one head per API key and per compared trait) trained on randomised avatars,
    selected on the people of `people_val` (mean balanced accuracy of the seven compared traits), reported on those
    of `people_test`."""

    name, section_name, loop_name = "train_avatar_params", "avatar_params", "avatar_params"
    show = ("train/loss",)
    one_process = True

    def read_data(self) -> ShardDataset:
        self.data = read_data(Path(self.params.pack.out_dir))
        return self.data.avatars["train"]

    def build(self) -> Networks:
        section, rt = self.section, self.rt
        self.arch = {
            "input_size": section.input_size,
            "width": section.width,
            "depth": section.depth,
            "hidden": section.hidden,
            "dropout": section.dropout,
        }
        self.net = AvatarReader(**self.arch).to(rt.device)
        self.arch["vocab"] = self.net.vocab
        decay = [p for p in self.net.parameters() if p.ndim > 1]
        rest = [p for p in self.net.parameters() if p.ndim <= 1]
        groups = [{"params": decay, "weight_decay": section.weight_decay}, {"params": rest, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(groups, lr=section.lr)
        select = best_people_val if len(self.data.people_val) else None
        return Networks({"model": self.net}, {"model": optimizer}, select, self.lr_at)

    def lr_at(self, step: int) -> float:
        return lr_factor(step, self.section.steps, WARMUP_STEPS, "cosine")

    def run_key(self) -> RunKey:
        params = loop_params(resolved(self.section), NOT_SHAPING)
        return RunKey(params, code_version("pipeline.train.train_avatar_params"), {"the shards": self.data.data_id})

    def before_fit(self) -> None:
        """The classes of every train avatar's keys, and the randomisation."""
        self.targets = class_targets(self.data.avatars["train"].index, self.net.vocab)
        self.position_of = {int(row): i for i, row in enumerate(self.data.avatars["train"].rows)}
        self.randomize = PHOTO_LIKE if self.section.randomize else None

    def train_step(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, Any]:
        """Photo-like avatars through the reader, every key's and trait's cross-entropy, one AdamW step."""
        rt = self.rt
        # ---- inputs: randomised avatars and their known parameters
        positions = torch.tensor([self.position_of[int(row)] for row in batch["index"]])
        x = to_model_input(rt.to_device(batch["image"]), self.net.input_size)
        if self.randomize is not None:
            x = randomize_avatars(x.add(1).div(2), self.randomize, generator).mul(2).sub(1)
        # ---- every head, one loss
        logits = self.net(rt.memory_format(x))
        loss = self.net.loss(logits, {key: rt.to_device(t[positions]) for key, t in self.targets.items()})
        self.trainer.backward(loss)
        hits = (logits["gender"].argmax(1).cpu() == self.targets["gender"][positions]).float().mean()
        return {"train/loss": loss.detach(), "train/gender_acc": hits}

    def people(self, split: ShardDataset) -> tuple[list[AvatarSpec], pd.DataFrame]:
        images, rows = all_images([split])
        return predict_specs(self.net, images, self.section.style), rows

    def evaluate(self) -> dict[str, float]:
        """Mean balanced accuracy of the seven traits on the val people's photos, and on the val avatars."""
        out = {}
        if len(self.data.people_val):
            specs, rows = self.people(self.data.people_val)
            out["val/people_balanced"] = mean_balanced(trait_scores(specs, rows, self.section.skin_tone_bins))
        if len(self.data.avatars["val"]):
            specs, rows = self.people(self.data.avatars["val"])
            out["val/avatars_balanced"] = mean_balanced(trait_scores(specs, rows, self.section.skin_tone_bins))
        return out

    def finish(self) -> tuple[dict[str, Any], dict[str, Any]]:
        self.net.load_state_dict(self.trainer.selected())
        self.net.eval()
        bins = self.section.skin_tone_bins
        self.test_specs, self.test_rows = self.people(self.data.shown)
        held_out = len(self.data.people_test) > 0  # trait verdicts only on people no model trained on
        people = trait_scores(self.test_specs, self.test_rows, bins) if held_out else {}
        metrics: dict[str, Any] = {
            "traits": score_table(people),
            "traits_read": traits_read(people),
            "traits_compared": len(people),
            "people": int(self.test_rows["identity"].nunique()) if held_out else 0,
        }
        details: dict[str, Any] = {
            "margin": MARGIN,
            "selected": selected(self.trainer.best, self.trainer.step),
            "people_test_keys": key_accuracy(self.test_specs, self.test_rows) if held_out else {},
        }
        if len(self.data.avatars["test"]):
            specs, rows = self.people(self.data.avatars["test"])
            avatars = trait_scores(specs, rows, bins)
            metrics["avatars_traits_read"] = traits_read(avatars)
            details["avatars_test"] = {"traits": score_table(avatars), "keys": key_accuracy(specs, rows)}
        details["per_person"] = per_person(self.test_specs, self.test_rows)
        return metrics, details

    @torch.no_grad()
    def save(self, metrics: dict[str, Any]) -> None:
        """avatar_params.pt and the grid of test people: photo | predicted avatar | the DTN's emoji (when dtn.pt was
        trained on this f) | their true avatar."""
        info = {"params": resolved(self.section), "style": self.section.style}
        info |= {"metrics": metrics, "run": self.trainer.key.record()}
        save_avatar_params(Path(self.section.model), self.net.state_dict(), self.arch, info)
        emoji = self.dtn_emoji(self.data.shown)
        grid = people_grid(self.data.shown, self.test_specs, self.test_rows, self.section.grid_people, emoji)
        self.trainer.live.image("people_avatars.png", grid)

    def dtn_emoji(self, split: ShardDataset) -> np.ndarray | None:
        """The DTN's emoji of every photo of the split, uint8 (N, S, S, 3), when dtn.pt exists and was trained on
        today's f.pt; None otherwise (the grid then has no DTN column)."""
        f_path, path = Path(self.params.pretrain_f.model), Path(self.params.dtn.model)
        if not path.is_file() or not f_path.is_file():
            return None
        try:
            encoder = load_f(f_path, self.rt.device)
            g, info = load_generator(path, self.rt.device)
        except CheckpointError as exc:
            self.say(f"{self.name}: no DTN column in the grid: {exc}")
            return None
        if info.get("f_key") != str(encoder.info.get("run", {}).get("key", "")):
            self.say(f"{self.name}: no DTN column in the grid: {path} was trained on another f than {f_path}")
            return None
        images, _ = all_images([split])
        return to_uint8_images(generate(encoder, g, images)).numpy()

    def summary(self, metrics: dict[str, Any], details: dict[str, Any]) -> str:
        traits = metrics["traits"]
        if not len(self.data.people_test):
            return (
                f"train_avatar_params: no trait verdicts: pack held no people out (pack.people_test_fraction), and "
                f"traits are judged only on people no model trained on; the grid shows the test photos of "
                f"{self.test_rows['identity'].nunique()} people"
            )
        if not traits:
            return (
                f"train_avatar_params: no ground truth: the {self.test_rows['identity'].nunique()} held-out people's "
                "photos carry no avatar parameters (real photos); the grid shows what the heads draw for them"
            )
        shown = ", ".join(
            f"{name} {t['balanced_accuracy']:.2f}/{t['chance']:.2f}" for name, t in sorted(traits.items())
        )
        return (
            f"train_avatar_params: {metrics['traits_read']} of {metrics['traits_compared']} traits at >= chance + "
            f"{MARGIN} on {metrics['people']} held-out people (balanced accuracy/chance: {shown})"
        )


def best_people_val(metrics: dict[str, float]) -> tuple[float, ...]:
    """Model selection: the best mean balanced accuracy on the val people, then on the val avatars."""
    return metrics.get("val/people_balanced", 0.0), metrics.get("val/avatars_balanced", 0.0)


def selected(best: dict[str, Any] | None, step: int) -> dict[str, Any]:
    """The selected step and its val numbers (the last step when nothing was selected)."""
    if best is None:
        return {"step": step}
    return {"step": int(best["step"]), **{k.replace("/", "_"): round(float(v), 4) for k, v in best["metrics"].items()}}


def true_spec(row: pd.Series, style: int) -> AvatarSpec:
    """The avatar of a person's ground-truth parameters (the sandbox's people), drawn in `style`."""
    gender = int(row["gender"])
    traits = {key: int(row[key]) for key in catalogue_options(gender, style) if key in row and pd.notna(row[key])}
    return make_spec(gender, style, traits)


def per_person(specs: list[AvatarSpec], rows: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Each test person's most common predicted value of every key over their photos."""
    identities = rows["identity"].astype(str).tolist()
    frame = pd.DataFrame([{"gender": s.gender, **s.trait_dict} for s in specs]).assign(identity=identities)
    out = {}
    for name, group in frame.groupby("identity"):
        out[str(name)] = {key: int(value) for key, value in group.drop(columns="identity").mode().iloc[0].items()}
    return out


def people_grid(
    split: ShardDataset, specs: list[AvatarSpec], rows: pd.DataFrame, count: int, emoji: np.ndarray | None = None
) -> np.ndarray:
    """The first photo of up to `count` test people: photo | predicted avatar | DTN emoji (when given) | true avatar
    (a column only when some row knows it; "no truth" for a row that does not), labelled."""
    rows = rows.reset_index(drop=True)
    first = rows.drop_duplicates("identity").index[:count].to_numpy()
    photos = split.gather(first)["image"].numpy()
    any_truth = "gender" in rows and bool(rows["gender"].notna().any())  # real photos have none: no blank column
    tiles, labels = [], []
    for photo, position in zip(photos, first, strict=True):
        row, spec = rows.iloc[int(position)], specs[int(position)]
        tiles += [photo, render_avatar(spec)]
        labels += [str(row["identity"])[:12], "predicted"]
        if emoji is not None:
            tiles.append(emoji[int(position)])
            labels.append("DTN")
        if any_truth:
            known = pd.notna(row["gender"])
            tiles.append(render_avatar(true_spec(row, spec.style)) if known else np.full_like(photo, 255))
            labels.append("true" if known else "no truth")
    columns = 2 + (emoji is not None) + any_truth
    return image_grid([to_side(t, GRID_SIDE) for t in tiles], cols=3 * columns, labels=labels)


def to_side(image: np.ndarray, side: int) -> np.ndarray:
    """An RGB uint8 image resized to side x side (area interpolation)."""
    return cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
