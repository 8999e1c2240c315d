"""Avatar parameters from a face embedding (after Wolf, Taigman & Polyak 2017): one head per avatar API key, decoded
to a query the catalogue accepts, so the avatar engine can draw it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.checkpoint import load_checkpoint, save_checkpoint
from pipeline.core.trait_classes import TRAITS, class_counts, trait_classes, value_class
from pipeline.core.traits import GENDERS, NONE, STYLES, TRAIT_KEYS, AvatarSpec, catalogue_options, make_spec

AVATAR_PARAMS_FORMAT = "img2caricature/avatar-params-v2"  # v1 held heads over f, with no encoder of its own
PREDICTED_KEYS = ("gender", *TRAIT_KEYS)  # style is the user's choice of look, not a trait of the person
TRAIT_PREFIX = "trait/"  # the logits of a compared trait's classes (glasses or none, bald / short / long hair, ...)
SKIN_TONE_BINS = 3


def vocabulary() -> dict[str, tuple[int, ...]]:
    """Every value each predicted key takes in any gender and style, sorted: the classes of its head."""
    values: dict[str, set[int]] = {"gender": set(GENDERS)}
    for gender in GENDERS:
        for style in STYLES:
            for key, options in catalogue_options(gender, style).items():
                values.setdefault(key, set()).update(options)
    return {key: tuple(sorted(values[key])) for key in PREDICTED_KEYS}


def class_targets(rows: pd.DataFrame, vocab: Mapping[str, Sequence[int]]) -> dict[str, torch.Tensor]:
    """The class of every key for rows with the avatar API's columns (a value outside the vocabulary is -1), and of
    every compared trait (`trait/<name>`)."""
    classes = trait_classes(rows, SKIN_TONE_BINS) if set(TRAITS) <= set(rows.columns) else None
    out = {
        TRAIT_PREFIX + name: torch.tensor(
            classes[name].to_numpy() if classes is not None else [-1] * len(rows), dtype=torch.long
        )
        for name in TRAITS
    }
    for key, values in vocab.items():
        position = {int(v): i for i, v in enumerate(values)}
        column = rows[key] if key in rows else pd.Series(-1, index=rows.index)
        out[key] = torch.tensor([position.get(int(v), -1) if pd.notna(v) else -1 for v in column], dtype=torch.long)
    return out


class AvatarParamsNet(nn.Module):
    """(B, D) embedding -> {key: (B, options) logits, trait/<name>: (B, classes) logits}: a hidden layer shared by
    one linear head per API key and one per compared trait.

    The trait heads carry what the keys split thin: "glasses or none" is one decision, where the glasses key spreads
    it over seven options. Decoding decides each trait's class by its trait head and then takes the best option of
    the key within that class.

    Args:
        embed_dim: the encoder's embedding width.
        hidden: the shared hidden layer's width; 0 = linear heads on the embedding itself.
        dropout: before the heads (after the hidden layer, when there is one).
        vocab: key -> the values its head chooses among (`vocabulary()` when None).
    """

    def __init__(
        self, embed_dim: int, hidden: int = 256, dropout: float = 0.2, vocab: Mapping[str, Sequence[int]] | None = None
    ) -> None:
        super().__init__()
        self.vocab = {key: tuple(int(v) for v in values) for key, values in (vocab or vocabulary()).items()}
        self.trunk: nn.Module = nn.Dropout(dropout) if dropout else nn.Identity()
        if hidden:
            self.trunk = nn.Sequential(nn.Linear(embed_dim, hidden), nn.ReLU(inplace=True), self.trunk)
        else:
            hidden = embed_dim
        heads = {key: nn.Linear(hidden, len(values)) for key, values in self.vocab.items()}
        heads |= {TRAIT_PREFIX + name: nn.Linear(hidden, n) for name, n in class_counts(SKIN_TONE_BINS).items()}
        self.heads = nn.ModuleDict(heads)

    def forward(self, embeddings: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.trunk(embeddings)
        return {key: head(hidden) for key, head in self.heads.items()}

    def loss(self, logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
        """The mean cross-entropy of the key heads plus that of the trait heads (targets of -1 are left out)."""
        losses = {k: F.cross_entropy(logits[k], targets[k], ignore_index=-1) for k in self.heads}
        keys = [v for k, v in losses.items() if not k.startswith(TRAIT_PREFIX)]
        traits = [v for k, v in losses.items() if k.startswith(TRAIT_PREFIX)]
        return torch.stack(keys).mean() + torch.stack(traits).mean()

    @torch.no_grad()
    def decode(self, logits: Mapping[str, torch.Tensor], style: int) -> list[AvatarSpec]:
        """The most likely avatar of each row that the catalogue can draw in `style`: gender first, then every key
        among the options of that gender and style only (a woman's avatar gets no beard, a flat one no eyelashes).

        A compared trait's class comes from its trait head (among the classes the allowed options have), then the
        key's best option of that class. Any other optional part (eyelashes, details, ...) is drawn when its options
        together are more likely than none. Taking the single most likely option instead would almost never draw
        glasses: with six styles to choose from, "none" wins the argmax even when glasses are twice as likely."""
        probabilities = {key: value.float().softmax(1).cpu() for key, value in logits.items()}
        genders = [GENDERS[i] for i in probabilities[TRAIT_PREFIX + "gender"].argmax(1).tolist()]
        specs = []
        for row, gender in enumerate(genders):
            traits = {}
            for key, allowed in catalogue_options(gender, style).items():
                p = probabilities[key][row, [self.vocab[key].index(v) for v in allowed]]
                if key in TRAITS:
                    classes = [value_class(key, v, SKIN_TONE_BINS) for v in allowed]
                    trait = probabilities[TRAIT_PREFIX + key][row]
                    chosen = max(set(classes), key=lambda c, t=trait: float(t[c]))
                    candidates = [i for i, c in enumerate(classes) if c == chosen]
                else:
                    present = [i for i, v in enumerate(allowed) if v != NONE]
                    absent = [i for i, v in enumerate(allowed) if v == NONE]
                    candidates = present if not absent or p[present].sum() > p[absent].sum() else absent
                    candidates = candidates or list(range(len(allowed)))
                traits[key] = int(allowed[max(candidates, key=lambda i, p=p: float(p[i]))])
            specs.append(make_spec(gender, style, traits))
        return specs


class AvatarEncoder(nn.Module):
    """A small CNN for the avatar traits: (B, 3, S, S) in [-1, 1] -> (B, width * 2 ** (depth - 1)) pooled features.

    Each of `depth` levels is a 3x3 conv and a stride-2 3x3 conv, both with BatchNorm and ReLU; each level doubles the
    width. It is trained from scratch on photo-like avatars: measured on the val people, it carries the traits from
    avatars to photos where f, a network trained to tell 58 people apart, does not (docs/avatar_params.md).
    """

    def __init__(self, width: int = 16, depth: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for level in range(depth):
            out = width * 2**level
            for stride in (1, 2):
                layers += [nn.Conv2d(channels, out, 3, stride, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                channels = out
        self.layers = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.embed_dim = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class AvatarReader(nn.Module):
    """An image to every avatar API key and compared trait: `AvatarEncoder`, then `AvatarParamsNet`'s heads.

    Args:
        input_size: the side images are resized to (the aligned crops are larger).
        width, depth: the encoder's.
        hidden, dropout, vocab: the heads'.
    """

    def __init__(
        self,
        input_size: int = 64,
        width: int = 16,
        depth: int = 4,
        hidden: int = 0,
        dropout: float = 0.2,
        vocab: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.encoder = AvatarEncoder(width, depth)
        self.heads = AvatarParamsNet(self.encoder.embed_dim, hidden, dropout, vocab)
        self.vocab = self.heads.vocab

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.heads(self.encoder(x))

    def loss(self, logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.heads.loss(logits, targets)

    def decode(self, logits: Mapping[str, torch.Tensor], style: int) -> list[AvatarSpec]:
        return self.heads.decode(logits, style)


def spec_rows(specs: Sequence[AvatarSpec]) -> pd.DataFrame:
    """Specs as rows with the avatar API's columns (gender, style and every trait key)."""
    return pd.DataFrame([{"gender": s.gender, "style": s.style, **s.trait_dict} for s in specs])


def save_avatar_params(path: Path, state: dict, arch: dict[str, Any], info: dict[str, Any]) -> None:
    """Write avatar_params.pt atomically: the reader's weights, its arguments (`AvatarReader`'s, vocabulary included)
    and info."""
    save_checkpoint(path, {"state": state, "arch": dict(arch), "info": info}, AVATAR_PARAMS_FORMAT)


def load_avatar_params(path: Path, device: str | torch.device = "cpu") -> tuple[AvatarReader, dict[str, Any]]:
    """The reader from avatar_params.pt in eval mode, and the info saved beside it (style, metrics, run key).

    Raises:
        FileNotFoundError: when there is no file.
        pipeline.core.checkpoint.CheckpointError: when it is corrupt or not an avatar_params.pt.
    """
    payload = load_checkpoint(
        path, AVATAR_PARAMS_FORMAT, missing="train it first with `dvc repro train_avatar_params`"
    )
    net = AvatarReader(**payload["arch"])
    net.load_state_dict(payload["state"])
    return net.to(device).eval(), payload["info"]
