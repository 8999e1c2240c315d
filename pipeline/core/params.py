"""Typed params.yaml: one pydantic model per section, validated once, errors name the dotted key."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_PARAMS = Path("params.yaml")


# Bits of the 256-bit dHash within which two photos count as the same photo: one bound, used by every section.
DhashDistance = Annotated[int, Field(ge=0, le=256)]
Share = Annotated[float, Field(ge=0, le=1)]  # a probability


def _partition(value: str) -> str:
    match = re.fullmatch(r"(\d+)/(\d+)", value)
    if not match or int(match[2]) < 1 or int(match[1]) >= int(match[2]):
        raise ValueError(f"must be i/n with 0 <= i < n (part i of a crawl split n ways, e.g. 0/4), got {value!r}")
    return value


# Part i of n of a crawl split across machines; 0/1 is the whole crawl (pipeline.crawl.partition).
Partition = Annotated[str, AfterValidator(_partition)]


class ParamsError(ValueError):
    """params.yaml is missing, malformed, or holds a value outside what the pipeline accepts."""


class _Section(BaseModel):
    # strict: a YAML string is not a number and `true` is not 1 (an int is still a float); lists become tuples below
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


AsTuple = BeforeValidator(_as_tuple)  # YAML has lists, not tuples; the items stay strict
OneOrMany = BeforeValidator(lambda value: (value,) if isinstance(value, str) else value)  # `x` means `[x]`


def _distinct(value: list[str]) -> list[str]:
    if len(set(value)) != len(value):
        raise ValueError(f"lists an entry twice: {value}")
    return value


# DiffAugment's transforms (pipeline.models.diffaugment.POLICIES), applied in the listed order, each at most once
DiffAugmentPolicy = Annotated[list[Literal["color", "translation", "cutout"]], AfterValidator(_distinct)]


class FaultParams(_Section):
    """Fault injection of the sandbox (tests and drills only; every rate is a probability per request)."""

    latency_ms: float = Field(0.0, ge=0, le=60_000)
    error_429: float = Field(0.0, ge=0, le=1)
    error_500: float = Field(0.0, ge=0, le=1)
    error_503: float = Field(0.0, ge=0, le=1)
    truncated: float = Field(0.0, ge=0, le=1)
    wrong_type: float = Field(0.0, ge=0, le=1)
    corrupt: float = Field(0.0, ge=0, le=1)
    oversized: float = Field(0.0, ge=0, le=1)
    retry_after_s: float = Field(1.0, ge=0, le=3600)
    seed: int = 0

    @property
    def rates(self) -> dict[str, float]:
        """The per-request probability of each fault kind."""
        return {k: v for k, v in self.model_dump().items() if k not in ("latency_ms", "retry_after_s", "seed")}

    @model_validator(mode="after")
    def _rates_sum(self) -> FaultParams:
        total = sum(self.rates.values())
        if total > 1:
            raise ValueError(f"fault rates add up to {total:.3f}; they are exclusive per request and must sum to <= 1")
        return self


class SandboxParams(_Section):
    """The offline web the default run crawls."""

    host: Literal["127.0.0.1"] = "127.0.0.1"
    seed: int = 0
    photos: str | None = None  # a folder of <identity>/<images>, served instead of synthetic photos
    photos_per_identity: int = Field(60, ge=1, le=1000)
    render_cache: int = Field(4096, ge=0, le=1_000_000)  # encoded images kept in memory per server
    faults: FaultParams = FaultParams()


class FetchParams(_Section):
    """How one crawler talks to a server: concurrency, timeouts, retries and the image limits."""

    concurrency: int = Field(32, ge=1, le=1024)
    timeout_s: float = Field(20.0, gt=0, le=600)
    retries: int = Field(4, ge=0, le=20)
    backoff_s: float = Field(0.25, ge=0, le=60)
    backoff_max_s: float = Field(10.0, ge=0, le=600)
    max_bytes: int = Field(8_000_000, ge=1024, le=1_000_000_000)
    max_pixels: int = Field(40_000_000, ge=1024, le=1_000_000_000)
    partition: Partition = "0/1"  # this machine's part i/n of the crawl; merge the parts with `i2c crawl merge`


class CrawlAvatarsParams(FetchParams):
    """`crawl_avatars`: sample trait combinations from the catalogue and fetch their renders."""

    endpoint: str = "sandbox"
    count: int = Field(3000, ge=1, le=10_000_000)
    seed: int = 0
    genders: Annotated[tuple[Literal[1, 2], ...], AsTuple] = (1, 2)
    styles: Annotated[tuple[Literal[4, 5], ...], AsTuple] = (4, 5)
    # How often each optional trait is worn: `people` (the synthetic people's shares: hat 0.089, glasses 0.257),
    # `uniform` (every catalogue option alike), or {trait: share present} (other traits uniform).
    trait_presence: Literal["people", "uniform"] | dict[str, Share] = "people"
    scale: Literal[1, 2, 3] = 1
    min_size: int = Field(64, ge=1, le=10_000)
    out_dir: str = "data/raw/avatars"
    manifest: str = "data/raw/avatars.parquet"
    metrics: str = "metrics/crawl_avatars.json"
    details: str = "reports/details/crawl_avatars.json"  # reject reasons
    run_log: str = "reports/runs/crawl_avatars.json"  # this run's work and timings (not a DVC output)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if value != "sandbox" and not value.startswith(("http://", "https://")):
            raise ValueError(f"must be 'sandbox' or an http(s) URL of an avatar-builder server, got {value!r}")
        return value.rstrip("/")

    @field_validator("genders", "styles")
    @classmethod
    def _non_empty(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value:
            raise ValueError("must list at least one value")
        return value


FaceSource = Literal["sandbox", "bing", "google", "baidu", "flickr", "urls", "folder"]


class CrawlFacesParams(FetchParams):
    """`crawl_faces`: photos of named people through icrawler (sandbox search by default)."""

    source: FaceSource = "sandbox"
    # A number N = the first N synthetic people of the sandbox (`pipeline.sandbox.people`), or a list of names;
    # an empty list with sandbox.photos or source folder = every folder there.
    identities: Annotated[int, Field(ge=1)] | Annotated[tuple[str, ...], AsTuple] = 96
    per_identity: int = Field(20, ge=1, le=1000)  # search results (candidates) considered per identity
    min_per_identity: int = Field(12, ge=0, le=1000)
    min_size: int = Field(64, ge=1, le=10_000)
    near_duplicate_distance: DhashDistance = 8  # closer photos of one identity are near-duplicates
    engine_url: str | None = None  # base URL for bing/google/baidu/flickr; None = the engine's real host
    urls_file: str | None = None  # source urls: lines of `identity,url`
    folder: str | None = None  # source folder: <identity>/<images>
    concurrency: int = Field(4, ge=1, le=64)  # icrawler downloader threads
    out_dir: str = "data/raw/faces"
    manifest: str = "data/raw/faces.parquet"
    metrics: str = "metrics/crawl_faces.json"
    details: str = "reports/details/crawl_faces.json"  # reject reasons, photos per identity, search errors
    run_log: str = "reports/runs/crawl_faces.json"  # this run's work and timings (not a DVC output)

    @model_validator(mode="after")
    def _source_inputs(self) -> CrawlFacesParams:
        if self.source == "urls" and not self.urls_file:
            raise ValueError("source 'urls' needs urls_file: a file of `identity,url` lines")
        if self.source == "folder" and not self.folder:
            raise ValueError("source 'folder' needs folder: a directory of <identity>/<images>")
        if self.source in ("bing", "google", "baidu", "flickr") and not self.identities:
            raise ValueError(f"source {self.source!r} needs identities: the names to search for")
        if self.engine_url is not None and not self.engine_url.startswith(("http://", "https://")):
            raise ValueError(f"engine_url must be an http(s) URL, got {self.engine_url!r}")
        if isinstance(self.identities, int):
            if self.source != "sandbox":
                raise ValueError(
                    f"identities {self.identities} names synthetic sandbox people; source {self.source!r} needs a list "
                    "of names"
                )
            return self
        from pipeline.core.storage import safe_name

        folders: dict[str, str] = {}
        for name in self.identities:
            if not name.strip():
                raise ValueError("identities holds an empty name")
            other = folders.setdefault(safe_name(name), name)
            if other != name:
                raise ValueError(f"identities {other!r} and {name!r} share the folder {safe_name(name)!r}; keep one")
        return self


class CrawlParams(_Section):
    avatars: CrawlAvatarsParams = CrawlAvatarsParams()
    faces: CrawlFacesParams = CrawlFacesParams()


class AlignParams(_Section):
    """`align`: Haar face detection, a second opinion on every face, eye landmarks and a similarity warp.

    This model is the configuration the library (`pipeline.faces`) receives; the bounds here are the only ones.
    """

    size: int = Field(152, ge=16, le=1024)
    left_eye: Annotated[tuple[float, float], AsTuple] = (
        0.35,
        0.35,
    )  # template position of the image-left eye, fractions of size
    right_eye: Annotated[tuple[float, float], AsTuple] = (0.65, 0.35)
    eye_method: Literal["haar", "geometry", "blend"] = "haar"
    eyes_required: bool = False  # reject `no_eyes` instead of falling back to box geometry for a missed eye
    multiple_faces: Literal["reject", "largest"] = "largest"
    dominance: float = Field(2.0, ge=1.0, le=100.0)  # area ratio the largest face needs under "largest"
    min_face: int = Field(40, ge=8, le=4096)  # px in the original photo; the scan never looks for smaller faces
    detect_max_side: int = Field(640, ge=64, le=8192)  # longest side of the grey copy the cascade scans
    equalize: Annotated[tuple[Literal["none", "global", "clahe"], ...], AsTuple, OneOrMany] = (
        "none",
        "global",
    )  # contrast steps on that copy, tried in turn until a face is verified
    scale_factor: float = Field(1.1, gt=1.0, le=2.0)  # step between the cascade's pyramid levels
    coarse_scale_factor: float | None = Field(1.25, gt=1.0, le=3.0)  # coarse pass that says where to scan; null = off
    verify: bool = True  # a second opinion on every Haar box; boxes that fail it are `not_a_face`
    verify_votes: int = Field(3, ge=0, le=100)  # windows of the second cascade that must agree with a box
    blur_threshold: float = Field(60.0, ge=0.0, le=100_000.0)  # Laplacian variance of the face patch
    try_rotations: Annotated[tuple[float, ...], AsTuple] = (
        15.0,
        -15.0,
    )  # in-plane angles tried when nothing is found upright
    workers: int = Field(0, ge=0, le=256)  # processes; 0 = all cores
    chunk_size: int = Field(16, ge=1, le=10_000)
    out_dir: str = "data/aligned"
    metrics: str = "metrics/align.json"
    details: str = "reports/details/align.json"  # reject reasons, ground truth by kind, crops per identity
    run_log: str = "reports/runs/align.json"  # this run's work and timings (not a DVC output)
    samples: str = "reports/align_samples.png"  # aligned faces over aligned avatars, template eyes marked

    @model_validator(mode="after")
    def _eyes(self) -> AlignParams:
        for name in ("left_eye", "right_eye"):
            if not all(0.0 < v < 1.0 for v in getattr(self, name)):
                raise ValueError(f"{name} must be fractions of the output side, inside (0, 1)")
        if not self.left_eye[0] < self.right_eye[0]:
            raise ValueError(f"left_eye {self.left_eye} must lie left of right_eye {self.right_eye}")
        if self.eyes_required and self.eye_method == "geometry":
            raise ValueError("eyes_required needs eye_method haar or blend: geometry never misses an eye")
        if not self.equalize or len(set(self.equalize)) < len(self.equalize):
            raise ValueError(f"equalize {list(self.equalize)} must name distinct steps from none, global, clahe")
        return self


class PackParams(_Section):
    """`pack`: split the aligned data per identity and write uint8 shards + index.parquet per dataset.

    Its inputs are the outputs of `align` (align.out_dir) and `crawl_faces` (crawl.faces.out_dir).
    """

    out_dir: str = "data/shards"
    metrics: str = "metrics/pack.json"
    details: str = "reports/details/pack.json"  # split sizes, shards, bytes, dropped identities
    run_log: str = "reports/runs/pack.json"  # this run's work and timings (not a DVC output)
    shard_size: int = Field(100, ge=1, le=100_000)  # samples per shard (the paper's batches of 100)
    photo_size: int = Field(256, ge=32, le=4096)  # side of the letterboxed raw photos for CAM
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.1, ge=0, lt=1)
    people_val_fraction: float = Field(0.2, ge=0, lt=1)  # of the identities, set aside whole: no stage trains on them
    people_test_fraction: float = Field(0.2, ge=0, lt=1)
    seed: int = 0
    near_duplicate_distance: DhashDistance = 8  # closer photos never straddle two splits
    min_faces_per_identity: int = Field(10, ge=1, le=100_000)  # fewer aligned faces: identity dropped, reported
    workers: int = Field(2, ge=1, le=256)  # image decode threads

    @model_validator(mode="after")
    def _fractions(self) -> PackParams:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction:g} leaves no train split; "
                "keep the sum below 1"
            )
        if self.people_val_fraction + self.people_test_fraction >= 1:
            raise ValueError(
                f"people_val_fraction + people_test_fraction = "
                f"{self.people_val_fraction + self.people_test_fraction:g} leaves no identity to train on; keep the "
                "sum below 1"
            )
        return self


class RuntimeParams(_Section):
    """How a training stage uses the machine (`<section>.runtime`); the training core reads it."""

    device: str = "auto"  # auto = CUDA when present, else CPU; or cpu, cuda, cuda:1, ...
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto = bf16 autocast on CUDA, fp32 on CPU
    channels_last: bool = True  # NHWC model and inputs: tensor cores on CUDA, oneDNN's faster convs on CPU
    compile: bool = False  # torch.compile the model: minutes of compiling, pays off on long GPU runs
    threads: int = Field(0, ge=0, le=1024)  # CPU threads per process; 0 = the cores shared by the local ranks

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value != "auto" and not re.fullmatch(r"cpu|cuda(:\d+)?|mps", value):
            raise ValueError(f"must be auto, cpu, cuda or cuda:N, got {value!r}")
        return value


class AugmentParams(_Section):
    """On-device training augmentation (pipeline.dataset.loader.augment_batch)."""

    flip: float = Field(0.5, ge=0, le=1)  # probability of a horizontal flip
    crop: float = Field(0.1, ge=0, lt=1)  # largest share of the side a random crop removes
    brightness: float = Field(0.1, ge=0, le=1)  # factors drawn from 1 +- this
    contrast: float = Field(0.1, ge=0, le=1)
    saturation: float = Field(0.1, ge=0, le=1)
    rotate: float = Field(0.0, ge=0, le=45)  # largest in-plane rotation, degrees either way
    grey: float = Field(0.0, ge=0, le=1)  # probability of a grey image


class AvatarTaskParams(_Section):
    """`pretrain_f.avatars`: f also learns the avatar API's parameters of the crawled avatars, so that what it
    carries of a face's traits holds in both domains (the avatar route and the DTN read avatars through f)."""

    weight: float = Field(1.0, ge=0, le=100)  # the avatar loss beside identity's; 0 = photos only (the seed's f)
    batch_size: int = Field(32, ge=1, le=100_000)  # avatars per step, beside pretrain_f.batch_size photos
    randomize: bool = True  # photo-like avatars (backgrounds, shading, exposure, blur, noise, pose)
    domain_confusion: float = Field(0.0, ge=0, le=100)  # gradient-reversal weight of a photo-vs-avatar classifier
    domain_hidden: int = Field(64, ge=1, le=65_536)  # that classifier's hidden width


class LoopParams(_Section):
    """The step loop every training section shares (pipeline.train): length, seeding, logging, checkpoints."""

    seed: int = 0
    steps: int = Field(300, ge=1, le=10_000_000)
    batch_size: int = Field(32, ge=1, le=100_000)  # per process; a torchrun job of R ranks sees R x this per step
    grad_clip: float = Field(0.0, ge=0)  # largest global gradient norm; 0 = no clipping
    log_every: int = Field(10, ge=1)  # steps between logged training curves (averaged over the interval)
    eval_every: int = Field(50, ge=1)  # steps between evaluations (and model selection)
    checkpoint_every: int = Field(100, ge=1)  # steps between checkpoints; one is always written at the end
    runtime: RuntimeParams = RuntimeParams()


class PretrainFParams(LoopParams):
    """`pretrain_f`: the VGG-16-D identity classifier whose L2-normalised penultimate activation is f.

    It reads the `faces` shards under pack.out_dir: trains on `train`, selects on `val`, reports on `test`.
    """

    steps: int = Field(400, ge=1, le=10_000_000)
    batch_size: int = Field(32, ge=1, le=100_000)
    eval_every: int = Field(40, ge=1)
    checkpoint_every: int = Field(40, ge=1)
    input_size: Literal[64, 128, 152] = 128  # the seed's 128 or the DTN paper's 152 (64 for quick runs)
    width: float = Field(0.125, gt=0, le=4)  # multiplier of every conv and hidden FC width; 1 = paper scale
    batch_norm: bool = True
    dropout: float = Field(0.5, ge=0, lt=1)
    optimizer: Literal["sgd", "adamw"] = "adamw"  # sgd = SGD with Nesterov momentum
    lr: float = Field(0.002, gt=0, le=10)  # peak learning rate
    momentum: float = Field(0.9, ge=0, lt=1)  # SGD momentum, or AdamW's beta1
    weight_decay: float = Field(0.05, ge=0, le=1)
    schedule: Literal["constant", "cosine"] = "cosine"  # after the warm-up
    warmup_steps: int = Field(20, ge=0)  # linear ramp from 0 to lr
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    eval_flip: bool = False  # evaluate (and answer lookalike) on the mean logits of the face and its mirror image
    augment: AugmentParams = AugmentParams()
    avatars: AvatarTaskParams = AvatarTaskParams()  # the second domain: avatars and their known parameters
    model: str = "models/f.pt"
    metrics: str = "metrics/pretrain_f.json"
    details: str = "reports/details/pretrain_f.json"  # test accuracy per identity, the selected step's val numbers
    run_log: str = "reports/runs/pretrain_f.json"  # this run's steps, speed and resume (not a DVC output)
    live_dir: str = "reports/pretrain_f"  # dvclive curves and images, the test confusion matrix
    checkpoint_dir: str = "models/checkpoints/pretrain_f"  # the resume state after a kill


class TrainParams(LoopParams):
    """`train`: the optimiser and step loop shared by the GAN stages (`train_dcgan`, `train_dtn`).

    `dvc exp run -S train.lr=0.0002` changes exactly the stages that read this section; `pretrain_f` and
    `train_cam` keep their own optimiser keys.
    """

    steps: int = Field(600, ge=1, le=10_000_000)
    batch_size: int = Field(64, ge=1, le=100_000)
    lr: float = Field(0.0002, gt=0, le=1)  # Adam learning rate of every network (DCGAN's 0.0002)
    beta1: float = Field(0.5, ge=0, lt=1)  # Adam beta1 (DCGAN's 0.5)
    beta2: float = Field(0.999, ge=0, lt=1)
    log_every: int = Field(20, ge=1)
    eval_every: int = Field(100, ge=1)  # steps between sample grids
    checkpoint_every: int = Field(100, ge=1)


class CamParams(LoopParams):
    """`train_cam`: VGG-GAP (Zhou et al. 2016) on the uncropped photos of <pack.out_dir>/photos, identity labels only.

    Trains on `train`, selects on `val` top-1, reports top-1 and localisation (box vs the Haar box) on `test`.
    """

    steps: int = Field(1000, ge=1, le=10_000_000)
    batch_size: int = Field(32, ge=1, le=100_000)
    eval_every: int = Field(200, ge=1)
    checkpoint_every: int = Field(200, ge=1)
    head: Literal["gap", "fc"] = "gap"  # gap: conv5-3 -> 3x3 conv -> GAP -> softmax (a CAM); fc: VGG-ORG's FC head
    init: Literal["f", "scratch"] = "f"  # f: conv1..conv5-3 from pretrain_f.model (same width and batch_norm)
    freeze_blocks: int = Field(4, ge=0, le=5)  # conv blocks kept as f trained them (needs init f); 0 = train all
    cached_views: int = Field(
        4, ge=0, le=64
    )  # views of each photo whose frozen-block output is computed once; 0 = none
    input_size: int = Field(256, ge=32, le=1024, multiple_of=16)  # the photo is resized to this
    # gap head: input pixels per CAM cell; 16 = the paper's VGG-GAP, 8 = pool4 dropped (Choe et al. 2020)
    map_stride: Literal[8, 16] = 16
    width: float = Field(0.125, gt=0, le=4)  # multiplier of every conv (and FC) width; 1 = paper scale
    batch_norm: bool = True
    cam_channels: int = Field(1024, ge=1, le=8192)  # the added 3x3 conv, before the width multiplier
    dropout: float = Field(0.5, ge=0, lt=1)  # after each hidden FC of the fc head
    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float = Field(0.002, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)  # SGD momentum, or AdamW's beta1
    weight_decay: float = Field(0.05, ge=0, le=1)
    schedule: Literal["constant", "cosine"] = "cosine"
    warmup_steps: int = Field(20, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    augment: AugmentParams = AugmentParams()
    threshold: float = Field(0.5, gt=0, lt=1)  # a region is the map above this share of its peak (paper: 0.2; val: 0.5)
    # the box resized about its centre: the map's region covers the head, the Haar box the inner face (val: 0.6)
    box_scale: float = Field(0.6, gt=0, le=2)
    # true: the stage replaces threshold and box_scale by the best pair of its own val sweep (the test split never
    # picks), and saves that pair in cam.pt; for new data, whose map and boxes the defaults were not chosen on
    calibrate: bool = False
    boxes: Literal["largest", "every"] = "largest"  # the largest region's box | one box around every region
    min_iou: float = Field(0.5, gt=0, le=1)  # a test photo is localised when its box has IoU >= this with Haar's
    eval_flip: bool = True  # predict and map on the photo and its mirror image (mean logits, mean map)
    occlusion_patch: int = Field(64, ge=1, le=1024)  # fc head: the occluding patch's side in input pixels
    occlusion_stride: int = Field(32, ge=1, le=1024)  # 7 x 7 positions at 256 px
    overlays: int = Field(16, ge=1, le=256)  # test photos in the overlay sheet (the first ones of the split)
    model: str = "models/cam.pt"
    metrics: str = "metrics/cam.json"
    details: str = "reports/details/cam.json"  # per-identity accuracy, IoU spread, the floors, the selected step
    run_log: str = "reports/runs/train_cam.json"  # this run's steps, speed and resume (not a DVC output)
    live_dir: str = "reports/train_cam"  # dvclive curves and the overlay images
    checkpoint_dir: str = "models/checkpoints/train_cam"  # the resume state after a kill

    @model_validator(mode="after")
    def _occlusion(self) -> CamParams:
        if self.head == "fc" and self.occlusion_patch > self.input_size:
            raise ValueError(f"occlusion_patch {self.occlusion_patch} exceeds input_size {self.input_size}")
        if self.freeze_blocks and self.init != "f":
            raise ValueError(f"freeze_blocks {self.freeze_blocks} keeps f's blocks; set init: f or freeze_blocks: 0")
        return self


class DcganParams(_Section):
    """`train_dcgan`: the DCGAN of 64 x 64 faces on the `faces` shards, judged in f's space.

    The optimiser (Adam: lr, beta1, beta2), batch size, steps and loop come from the shared `train` section.
    """

    nz: int = Field(100, ge=1, le=4096)  # noise length (the paper's 100)
    ngf: int = Field(24, ge=1, le=1024)  # G's last hidden width; 64 = the paper's network
    ndf: int = Field(24, ge=1, le=1024)  # D's first width; 64 = the paper's network
    flip: float = Field(0.5, ge=0, le=1)  # probability of a mirrored training face
    # D's target for real faces: 0.9 is one-sided label smoothing (Salimans et al. 2016); 1.0 = the paper's loss
    real_label: float = Field(0.9, gt=0.5, le=1)
    # DiffAugment (Zhao et al. 2020): these transforms, in order, on every image D sees, real and generated, in
    # D's step and G's; [] = off
    diffaugment: DiffAugmentPolicy = Field(["translation", "cutout"])  # (val: colour hurt; docs/dcgan.md)
    spectral_norm: bool = False  # spectral norm on D's convs in place of its BatchNorm (SN-GAN)
    loss: Literal["bce", "hinge"] = "bce"  # bce: the paper's (non-saturating G) | hinge: SN-GAN's (real_label unused)
    lr_d: float | None = Field(None, gt=0, le=1)  # D's own Adam lr (two time-scale updates); null = train.lr
    # G's weights averaged over steps (an exponential moving average with this decay; Yazici et al. 2019): the
    # samples, grids, metrics and dcgan.pt use the average; 0 = off, the last weights (val, four seeds: docs/dcgan.md)
    ema: float = Field(0.99, ge=0, lt=1)
    # R1: D's loss also pays r1 / 2 x its squared gradient norm at the real faces it sees (Mescheder et al. 2018),
    # which keeps D from answering real faces with steep slopes that G chases around; 0 = off
    r1: float = Field(0.0, ge=0, le=1000)
    grid_samples: int = Field(32, ge=1, le=256)  # fixed-noise samples in every sample grid (8 per row)
    real_splits: list[Literal["train", "val", "test"]] = Field(["train", "val", "test"], min_length=1)
    eval_flip: bool = True  # real faces enter the evaluation with their mirror images (twice the samples)
    inception: str | None = None  # a TorchScript Inception-v3 (inception-2015-12-05.pt) for standard FID; null = none
    model: str = "models/dcgan.pt"
    metrics: str = "metrics/dcgan.json"
    details: str = "reports/details/dcgan.json"  # diversity of each side, the sample counts
    run_log: str = "reports/runs/train_dcgan.json"  # this run's steps, speed, resume and timings (not a DVC output)
    live_dir: str = "reports/train_dcgan"  # dvclive curves, the sample grids and their GIF
    checkpoint_dir: str = "models/checkpoints/train_dcgan"  # the resume state after a kill

    @field_validator("real_splits")
    @classmethod
    def _distinct_splits(cls, value: list[str]) -> list[str]:
        return _distinct(value)


class DtnParams(_Section):
    """`train_dtn`: the Domain Transfer Network photo -> emoji (g over a frozen f, a 3-way D) and its evaluation.

    The optimiser and loop come from the shared `train` section; this section holds the sizes, the loss weights
    (the paper's face weights alpha = 100, beta = 1, gamma = 0.05), the D/G schedule and the trait classifier.
    """

    emoji_size: Literal[32, 64, 128] = 64  # side of g's output (the paper's 64); resized to f's input for f(G(x))
    ngf: int = Field(16, ge=1, le=1024)  # channels of g's last hidden block (2x, 4x, ... before it)
    ndf: int = Field(16, ge=1, le=1024)  # channels of D's first conv
    dropout: float = Field(0.0, ge=0, lt=1)  # Dropout2d after every hidden block of g
    alpha: float = Field(100.0, ge=0)  # weight of L_CONST = d(f(x), f(G(x)))
    beta: float = Field(30.0, ge=0)  # weight of L_TID = d2(t, G(t)) (the paper: 1; 30 on val, docs/dtn.md)
    gamma: float = Field(0.05, ge=0)  # weight of L_TV
    const_distance: Literal["cosine", "mse", "l1"] = "cosine"  # d of L_CONST
    tid_distance: Literal["cosine", "mse", "l1"] = "mse"  # d2 of L_TID
    schedule: Literal["fixed", "adaptive"] = "fixed"  # fixed: D and G every step; adaptive: davrempe's port
    d_steps: int = Field(1, ge=0, le=100)  # fixed: D updates per step
    g_steps: int = Field(1, ge=1, le=100)  # fixed: G updates per step
    adaptive_low: float = Field(0.35, gt=0)  # adaptive: train D until its source loss is below this ...
    adaptive_high: float = Field(1.0, gt=0)  # ... then G until it rises above this
    decoder_steps: int = Field(200, ge=0, le=10_000_000)  # the first steps of train.steps: g alone learns to decode
    # f(avatar) into the avatar (beta L_TID + gamma L_TV) before D and L_CONST join; 0 = the GAN from step 0
    # DiffAugment (Zhao et al. 2020) on everything D sees, in its updates and G's; [] = off
    diffaugment: DiffAugmentPolicy = Field([])
    grid_photos: int = Field(16, ge=1, le=256)  # fixed test photos in the photo -> emoji grids
    trait_steps: int = Field(200, ge=1, le=1_000_000)  # steps of the trait classifier on the real avatars
    trait_lr: float = Field(0.002, gt=0, le=1)
    skin_tone_bins: int = Field(3, ge=2, le=12)  # skin tone compared by rank: light .. dark groups
    model: str = "models/dtn.pt"  # g, D, the arguments and f's run key
    metrics: str = "metrics/dtn.json"
    details: str = "reports/details/dtn.json"  # per-trait agreement, the trait classifier's ceiling, schedule counts
    run_log: str = "reports/runs/train_dtn.json"  # this run's steps, speed and resume (not a DVC output)
    live_dir: str = "reports/train_dtn"  # dvclive curves and photo -> emoji grids
    checkpoint_dir: str = "models/checkpoints/train_dtn"  # the resume state after a kill

    @model_validator(mode="after")
    def _thresholds(self) -> DtnParams:
        if self.adaptive_low >= self.adaptive_high:
            raise ValueError(f"adaptive_low {self.adaptive_low} must be below adaptive_high {self.adaptive_high}")
        return self


class AvatarParamsParams(LoopParams):
    """`train_avatar_params`: avatar API parameters from a photo (after Wolf, Taigman & Polyak 2017), learnt on the
    crawled avatars' known parameters; the emoji is the avatar engine's render of them.

    A small CNN of its own (not f) trains on photo-like variants of the train avatars (domain randomisation), is
    selected on the people of `people_val` and reported on those of `people_test`: whole identities that no stage
    trained on.
    """

    steps: int = Field(600, ge=1, le=10_000_000)
    batch_size: int = Field(64, ge=1, le=100_000)
    eval_every: int = Field(100, ge=1)
    checkpoint_every: int = Field(100, ge=1)
    lr: float = Field(0.002, gt=0, le=10)  # AdamW, cosine after a 20-step warm-up
    weight_decay: float = Field(0.01, ge=0, le=1)
    input_size: int = Field(64, ge=16, le=512)  # the aligned crops are resized to this side
    width: int = Field(16, ge=1, le=1024)  # the encoder's first width (each of its `depth` levels doubles it)
    depth: int = Field(4, ge=1, le=6)
    hidden: int = Field(0, ge=0, le=65_536)  # a hidden layer the heads share; 0 = linear heads on the encoder
    dropout: float = Field(0.2, ge=0, lt=1)  # before the heads
    randomize: bool = True  # photo-like avatars (backgrounds, shading, exposure, blur, noise, pose); false = as crawled
    style: Literal[4, 5] = 5  # the look of the drawn avatar: 4 = flat, 5 = deluxe
    skin_tone_bins: int = Field(3, ge=2, le=12)  # skin tone compared by brightness rank: light .. dark groups
    grid_people: int = Field(12, ge=1, le=256)  # test people in the photo | avatar | true avatar grid
    model: str = "models/avatar_params.pt"  # the encoder and heads, their vocabulary, the resolved params
    metrics: str = "metrics/avatar_params.json"
    details: str = "reports/details/avatar_params.json"  # every key's accuracy, the selected step, per-person answers
    run_log: str = "reports/runs/train_avatar_params.json"  # this run's steps, speed and resume (not a DVC output)
    live_dir: str = "reports/train_avatar_params"  # dvclive curves and the people grid
    checkpoint_dir: str = "models/checkpoints/train_avatar_params"  # the resume state after a kill


class ReportParams(_Section):
    """`report`: one static HTML page of every stage's metrics, curves and samples, and the metrics flattened."""

    out: str = "reports/index.html"  # one self-contained page: images inlined, opens offline
    summary: str = "metrics/summary.json"  # every stage's metrics in one flat {stage.key: number} file
    baseline: str = "HEAD"  # the git revision whose metrics and params stand beside the current ones
    samples: int = Field(24, ge=1, le=256)  # tiles per sample sheet (raw photos, raw avatars, rejects per reason)


class Params(_Section):
    """The whole params.yaml. Sections are added as their stages land."""

    sandbox: SandboxParams = SandboxParams()
    crawl: CrawlParams = CrawlParams()
    align: AlignParams = AlignParams()
    pack: PackParams = PackParams()
    pretrain_f: PretrainFParams = PretrainFParams()
    train: TrainParams = TrainParams()
    cam: CamParams = CamParams()
    dcgan: DcganParams = DcganParams()
    dtn: DtnParams = DtnParams()
    avatar_params: AvatarParamsParams = AvatarParamsParams()
    report: ReportParams = ReportParams()


# How pydantic names the member of a union a location went through (`identities.constrained-int`): not a key.
_UNION_MEMBER = re.compile(r"(literal|tuple|dict|list)\[.*\]|constrained-\w+|int|str|float|bool")


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in error["loc"] if not _UNION_MEMBER.fullmatch(str(p)))
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key; remove it or check its spelling"
    got = error.get("input")
    shown = f" (got {got!r})" if not isinstance(got, dict | list) else ""
    if isinstance(got, str) and error["type"] == "int_type":
        shown += "; write the number without quotes"
    elif isinstance(got, str) and error["type"] == "float_type":
        shown += "; write the number without quotes, with a dot (YAML reads 1e-3 as text: write 0.001 or 1.0e-3)"
    return f"{key}: {error['msg']}{shown}"


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate an already-loaded params mapping.

    Raises:
        ParamsError: naming every bad dotted key, its value and what is allowed.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = "\n  ".join(_describe(e) for e in exc.errors())
        raise ParamsError(f"{source} is invalid; fix these keys and re-run:\n  {lines}") from None


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Read and validate params.yaml once; every stage calls this before doing any work.

    Raises:
        ParamsError: when the file is missing, is not YAML, or fails validation.
    """
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path} not found; run from the repository root or pass the params file explicitly")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {exc}") from None
    return parse_params(raw, str(path))


def resolved(section: BaseModel) -> dict[str, Any]:
    """A JSON-ready dump of a section, saved beside manifests and inside checkpoints."""
    return section.model_dump(mode="json")
