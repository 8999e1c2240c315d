"""The `i2c` command line: thin wrappers over the library for people who work outside `dvc repro`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.core.params import DEFAULT_PARAMS, Params, ParamsError, load_params, parse_params

app = typer.Typer(
    help=(
        "img2caricature: every pipeline stage by hand (the same code as `dvc repro`), the trained models on your own "
        "photos (lookalike, emojify, cam), and `i2c results`: the headline numbers of the last run."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
sandbox_app = typer.Typer(help="The offline sandbox web (avatar API, image search, photo host).", no_args_is_help=True)
crawl_app = typer.Typer(
    help="Crawl avatars and face photos outside DVC (same code as the stages).", no_args_is_help=True
)
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(crawl_app, name="crawl")
align_app = typer.Typer(
    help="Haar face detection and eye alignment (the `align` stage) and its accuracy.", no_args_is_help=True
)
app.add_typer(align_app, name="align")

ParamsOption = Annotated[Path, typer.Option("--params", "-p", help="params file to read.")]


def set_option(example: str) -> Any:
    """The repeatable `-S key=value` option, with an example of a key that this command reads."""
    return typer.Option(None, "--set", "-S", help=f"override a param, e.g. -S {example} (repeatable).")


def _fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def with_overrides(path: Path, overrides: list[str] | None) -> Params:
    """Load params and apply `key.path=value` overrides (values parsed as YAML), validating the result."""
    import yaml

    try:
        params = load_params(path)
        if not overrides:
            return params
        raw: dict[str, Any] = params.model_dump(mode="json")
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise ParamsError(f"--set {item!r}: expected KEY=VALUE, e.g. crawl.avatars.count=50")
            node = raw
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ParamsError(f"--set {item!r}: {part} is not a section")
            node[leaf] = yaml.safe_load(value)
        return parse_params(raw, f"{path} with --set overrides")
    except ParamsError as exc:
        _fail(str(exc))
        raise  # unreachable; keeps type checkers calm


@sandbox_app.command("serve")
def sandbox_serve(
    port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1 (0 = any free port).")] = 8000,
    params: ParamsOption = DEFAULT_PARAMS,
    set_: list[str] | None = set_option("sandbox.seed=1"),
    access_log: Annotated[bool, typer.Option(help="log every request.")] = False,
) -> None:
    """Serve the sandbox web on 127.0.0.1 until Ctrl-C. Try /avatar-builder-v3/assets in a browser."""
    from pipeline.sandbox.server import serve_forever

    cfg = with_overrides(params, set_).sandbox
    typer.echo(f"sandbox on http://127.0.0.1:{port}  (catalogue: /avatar-builder-v3/assets; Ctrl-C stops)")
    serve_forever(cfg, port, access_log)


@sandbox_app.command("grid")
def sandbox_grid(
    out: Annotated[Path, typer.Option(help="PNG to write.")] = Path("reports/sandbox_avatars.png"),
    count: Annotated[int, typer.Option(min=1, max=1024, help="how many avatars.")] = 64,
    seed: Annotated[int, typer.Option(help="sampling seed.")] = 0,
) -> None:
    """Render a grid of random sandbox avatars to look at (no server needed)."""
    from pipeline.core import traits
    from pipeline.core.viz import image_grid, save_png
    from pipeline.sandbox.avatar import render_avatar

    catalogue = traits.parse_catalogue(traits.catalogue_json())
    specs = traits.sample_specs(catalogue, count, seed, traits.GENDERS, traits.STYLES)
    grid = image_grid([render_avatar(s) for s in specs], cols=min(8, count))
    save_png(out, grid)
    typer.echo(f"wrote {out} ({count} avatars)")


@crawl_app.command("avatars")
def crawl_avatars_cmd(
    params: ParamsOption = DEFAULT_PARAMS, set_: list[str] | None = set_option("crawl.avatars.count=50")
) -> None:
    """Crawl avatars as the `crawl_avatars` stage does (resumable; writes the manifest and metrics)."""
    from stages import crawl_avatars

    crawl_avatars.main(with_overrides(params, set_))


@crawl_app.command("faces")
def crawl_faces_cmd(
    params: ParamsOption = DEFAULT_PARAMS, set_: list[str] | None = set_option("crawl.faces.per_identity=20")
) -> None:
    """Crawl face photos as the `crawl_faces` stage does (resumable; writes the manifest and metrics)."""
    from stages import crawl_faces

    crawl_faces.main(with_overrides(params, set_))


@crawl_app.command("merge")
def crawl_merge_cmd(
    kind: Annotated[str, typer.Argument(help="faces or avatars: which crawl's parts to merge.")],
    parts: Annotated[list[Path], typer.Argument(help="checkouts that each crawled one partition (i/n).")],
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Merge crawl parts (each run with `-S crawl.<kind>.partition=i/n`) into this checkout, by content hash.

    Then `dvc repro` here (partition 0/1) reuses every merged row and downloads nothing again.
    """
    from pipeline.crawl.partition import MergeError, merge_parts

    if kind not in ("faces", "avatars"):
        _fail(f"unknown crawl {kind!r}; choose faces or avatars")
    try:
        report = merge_parts(kind, parts, with_overrides(params, None))  # type: ignore[arg-type]
    except MergeError as exc:
        _fail(str(exc))
        return
    typer.echo(
        f"merged {report.parts} parts: {report.rows} rows, {report.copied} files copied, "
        f"{report.present} already here; now run `dvc repro crawl_{kind}`"
    )


@align_app.command("run")
def align_run_cmd(params: ParamsOption = DEFAULT_PARAMS, set_: list[str] | None = set_option("align.size=96")) -> None:
    """Align the crawled faces and avatars as the `align` stage does (resumable; writes manifests and metrics)."""
    from stages import align

    align.main(with_overrides(params, set_))


@app.command("pack")
def pack_cmd(params: ParamsOption = DEFAULT_PARAMS, set_: list[str] | None = set_option("pack.shard_size=50")) -> None:
    """Split and shard the aligned data as the `pack` stage does (writes shards, index.parquet and metrics)."""
    from stages import pack

    pack.main(with_overrides(params, set_))


@app.command("pretrain-f")
def pretrain_f_cmd(
    params: ParamsOption = DEFAULT_PARAMS, set_: list[str] | None = set_option("pretrain_f.steps=800")
) -> None:
    """Train the identity classifier f as the `pretrain_f` stage does (resumable; writes models/f.pt and metrics)."""
    from stages import pretrain_f

    pretrain_f.main(with_overrides(params, set_))


@app.command("lookalike")
def lookalike_cmd(
    photo: Annotated[Path, typer.Argument(help="a photo with one face (JPEG, PNG, ...).")],
    top: Annotated[int, typer.Option("--top", "-k", min=1, help="how many identities to list.")] = 5,
    show: Annotated[
        Path | None, typer.Option(help="write input | aligned face | most similar training photo to this PNG.")
    ] = None,
    model: Annotated[Path | None, typer.Option(help="f to use (default: pretrain_f.model).")] = None,
    params: ParamsOption = DEFAULT_PARAMS,
    set_: list[str] | None = set_option("pack.out_dir=data/shards"),
) -> None:
    """Which trained identity does this photo look like? Detects and aligns the face, runs f, lists the top k."""
    from pipeline.core.checkpoint import CheckpointError
    from pipeline.core.storage import OutputError
    from pipeline.core.viz import save_png
    from pipeline.dataset.loader import ShardError
    from pipeline.faces.detect import ImageDecodeError, decode_image
    from pipeline.infer.lookalike import LookalikeError, lookalike, most_similar, show_sheet
    from pipeline.infer.photo import PhotoError, check_output, read_photo_bytes
    from pipeline.models.face_encoder import load_f

    cfg = with_overrides(params, set_) if (set_ or model is None or show is not None) else None
    model = model or Path(cfg.pretrain_f.model)  # type: ignore[union-attr]
    try:
        data = read_photo_bytes(photo)
        if show is not None:
            check_output(show)
        encoder = load_f(model)
        match = lookalike(data, encoder, top, name=str(photo))
        for rank, (identity, probability) in enumerate(match.ranking, 1):
            typer.echo(f"{rank:>2}. {identity:<32} {probability:6.1%}")
        if show is not None:
            shards = Path(cfg.pack.out_dir) / "faces"  # type: ignore[union-attr]
            similar, cosine = most_similar(encoder, match.aligned, shards, match.ranking[0][0])
            save_png(show, show_sheet(decode_image(data), match, similar, cosine))
            typer.echo(f"wrote {show} (most similar training photo of {match.ranking[0][0]}: cosine {cosine:.3f})")
    except (FileNotFoundError, CheckpointError, LookalikeError, ShardError, ImageDecodeError, ParamsError) as exc:
        _fail(str(exc))
    except (PhotoError, OutputError) as exc:
        _fail(str(exc))


@app.command("train-dtn")
def train_dtn_cmd(params: ParamsOption = DEFAULT_PARAMS, set_: list[str] | None = set_option("dtn.alpha=10")) -> None:
    """Train the photo -> emoji DTN as the `train_dtn` stage does (resumable; writes models/dtn.pt and metrics)."""
    from stages import train_dtn

    train_dtn.main(with_overrides(params, set_))


@app.command("train-avatar-params")
def train_avatar_params_cmd(
    params: ParamsOption = DEFAULT_PARAMS, set_: list[str] | None = set_option("avatar_params.steps=800")
) -> None:
    """Train the avatar-parameter heads as the `train_avatar_params` stage does (resumable; writes
    models/avatar_params.pt, metrics and the people grid)."""
    from stages import train_avatar_params

    train_avatar_params.main(with_overrides(params, set_))


@app.command("emojify")
def emojify_cmd(
    photos: Annotated[
        list[Path], typer.Argument(help="one or more photos with one face each (JPEG, PNG, ...), or folders of them.")
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="the avatar PNG to write; a folder when given several photos or a folder."),
    ] = None,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="also write the avatar API's parameters as JSON (a folder for several photos)."),
    ] = None,
    dtn_out: Annotated[
        Path | None, typer.Option("--dtn", help="also write the DTN's emoji PNG (a folder for several photos).")
    ] = None,
    side_by_side: Annotated[bool, typer.Option(help="write the aligned face beside the avatar (and emoji).")] = False,
    style: Annotated[int | None, typer.Option(help="4 = flat, 5 = deluxe (default: avatar_params.style).")] = None,
    model: Annotated[
        Path | None, typer.Option(help="the avatar-parameter model (default: avatar_params.model).")
    ] = None,
    dtn_model: Annotated[Path | None, typer.Option(help="the DTN for --dtn (default: dtn.model).")] = None,
    f_model: Annotated[Path | None, typer.Option("--f", help="f to use (default: pretrain_f.model).")] = None,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Turn the face in a photo into an avatar: detect, align, predict the avatar API's parameters, and draw them
    with the avatar engine (offline). Several photos or a folder load the models once and write one file per photo.
    """
    from pipeline.core.checkpoint import CheckpointError
    from pipeline.core.storage import OutputError
    from pipeline.infer.emojify import Emojifier
    from pipeline.infer.lookalike import LookalikeError
    from pipeline.infer.photo import PhotoError
    from pipeline.models.face_encoder import load_f

    if style is not None and style not in (4, 5):
        _fail(f"--style {style} is not a style of the avatar engine; use 4 (flat) or 5 (deluxe)")
    cfg = with_overrides(params, None)
    try:
        jobs = emojify_jobs(photos, out, json_out, dtn_out)
        emojify = Emojifier(
            load_f(f_model or Path(cfg.pretrain_f.model)),
            model or Path(cfg.avatar_params.model),
            (dtn_model or Path(cfg.dtn.model)) if dtn_out is not None else None,
            style,
        )
    except (FileNotFoundError, CheckpointError, LookalikeError, PhotoError, OutputError) as exc:
        _fail(str(exc))
    failed = run_emojify(jobs, emojify, side_by_side, cfg.crawl.avatars.endpoint)
    if failed:
        raise typer.Exit(1)


def emojify_jobs(photos: list[Path], out: Path | None, json_out: Path | None, dtn_out: Path | None) -> list[Any]:
    """One job per photo: where its avatar, JSON and DTN emoji go. One photo writes the named files; several photos
    or a folder write `<stem>.png` (`.json`) into the named folders, a folder's subfolders (`<person>/<photos>`)
    mirrored.

    Raises:
        PhotoError: for a missing input, an output that cannot be written, or a folder of no photos.
    """
    from pipeline.infer.photo import PhotoError, check_output, photo_files

    batch = len(photos) > 1 or photos[0].is_dir()
    if not batch:
        outputs = [o for o in (out or Path("emoji.png"), json_out, dtn_out) if o is not None]
        for path in outputs:
            check_output(path)
        return [(photos[0], out or Path("emoji.png"), json_out, dtn_out)]
    files = photo_files(photos)
    folders = [f for f in (out or Path("emoji"), json_out, dtn_out) if f is not None]
    for folder in folders:
        if folder.exists() and not folder.is_dir():
            raise PhotoError(f"{folder} is a file; with several photos, -o, --json and --dtn name folders")
    names = [name.as_posix() for _, name in files]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise PhotoError(f"photos share the name {twice[0]!r} (different folders); rename one so no output is lost")
    jobs = []
    for file, name in files:
        jobs.append(
            (
                file,
                (out or Path("emoji")) / f"{name}.png",
                json_out / f"{name}.json" if json_out is not None else None,
                dtn_out / f"{name}.png" if dtn_out is not None else None,
            )
        )
    for folder in folders:
        check_output(folder / "x.png")
    return jobs


def run_emojify(jobs: list[Any], emojify: Any, side_by_side: bool, endpoint: str) -> int:
    """Answer every job, one line per photo it could not answer; returns how many failed."""
    import json

    from tqdm import tqdm

    from pipeline.core.storage import OutputError, atomic_write_bytes
    from pipeline.core.viz import save_png
    from pipeline.infer.emojify import query_json
    from pipeline.infer.emojify import side_by_side as beside
    from pipeline.infer.lookalike import LookalikeError
    from pipeline.infer.photo import PhotoError, read_photo_bytes

    failed = 0
    many = len(jobs) > 1
    for photo, png, json_path, dtn_png in tqdm(jobs, desc="emojify", unit="photo", disable=not many):
        try:
            emoji = emojify(read_photo_bytes(photo), name=str(photo))
            extra = [emoji.dtn] if emoji.dtn is not None and side_by_side else []
            save_png(png, beside(emoji.aligned, emoji.avatar, *extra) if side_by_side else emoji.avatar)
            written = [str(png)]
            if json_path is not None:
                body = json.dumps(query_json(emoji.spec, endpoint), indent=2) + "\n"
                json_path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(json_path, body.encode())
                written.append(str(json_path))
            if dtn_png is not None and emoji.dtn is not None:
                save_png(dtn_png, emoji.dtn)
                written.append(str(dtn_png))
            if not many:
                typer.echo(f"wrote {', '.join(written)}")
        except (LookalikeError, PhotoError, OutputError) as exc:
            failed += 1
            tqdm.write(typer.style(f"skipped: {exc}" if many else str(exc), fg=typer.colors.RED), file=sys.stderr)
    if many:
        root = os.path.commonpath([str(job[1].parent) for job in jobs])
        typer.echo(f"emojify: {len(jobs) - failed} of {len(jobs)} photos answered, in {root}/")
    return failed


@app.command("train-cam")
def train_cam_cmd(params: ParamsOption = DEFAULT_PARAMS, set_: list[str] | None = set_option("cam.head=fc")) -> None:
    """Train the CAM model as the `train_cam` stage does (resumable; writes models/cam.pt, metrics and overlays)."""
    from stages import train_cam

    train_cam.main(with_overrides(params, set_))


@app.command("train-dcgan")
def train_dcgan_cmd(
    params: ParamsOption = DEFAULT_PARAMS, set_: list[str] | None = set_option("train.lr=0.0001")
) -> None:
    """Train the DCGAN as the `train_dcgan` stage does (resumable; writes models/dcgan.pt, metrics, grids and GIF)."""
    from stages import train_dcgan

    train_dcgan.main(with_overrides(params, set_))


@app.command("report")
def report_cmd(
    if_missing: Annotated[
        bool, typer.Option("--if-missing", help="only write the page when there is none (`make repro` after DVC).")
    ] = False,
    pictures: Annotated[
        Path | None, typer.Option(help="also copy the run's headline pictures into this folder (README's: docs).")
    ] = None,
    params: ParamsOption = DEFAULT_PARAMS,
    set_: list[str] | None = set_option("report.baseline=HEAD~1"),
) -> None:
    """Write the HTML report and metrics/summary.json from every stage's metrics and plots, as the `report` stage does.

    DVC skips the `report` stage when no metric changed (a fresh clone whose dvc.lock matches), and the page is not a
    DVC output: this writes it then.
    """
    from stages import report

    cfg = with_overrides(params, set_)
    if pictures is not None:
        from pipeline.report.build import docs_pictures

        for path in docs_pictures(cfg, pictures):
            typer.echo(f"wrote {path}")
    page = Path(cfg.report.out)
    if if_missing and page.is_file():
        typer.echo(f"report: open {page.resolve()} in a browser")
        return
    report.main(cfg)


@app.command("results")
def results_cmd(
    baseline: Annotated[
        str,
        typer.Option(
            "--baseline", "-b", help="the git revision to compare with, or a saved run's folder (profiles/hour)."
        ),
    ] = "HEAD",
) -> None:
    """Every stage's headline numbers in one table: value, chance level or floor, and the change since a revision.

    The same numbers as the report's Results table; `dvc metrics show` lists every number of every file.
    """
    from pipeline.report.collect import collect
    from pipeline.report.results import format_table, result_rows

    view = collect(Path("."), baseline)
    rows = result_rows(view)
    if not rows:
        _fail("no stage has written its metrics yet; run `dvc repro` (or `make repro`) first")
    typer.echo(format_table(rows, view.baseline_note if view.baseline_rev else "baseline"))
    if view.baseline_rev is None:
        typer.echo(view.baseline_note)


@app.command("times")
def times_cmd(
    saved: Annotated[
        list[Path] | None, typer.Argument(help="saved runs' folders to put beside the workspace (profiles/hour).")
    ] = None,
) -> None:
    """Each stage's wall and CPU seconds in the workspace's last run, beside any saved run's.

    Read from reports/runs/<stage>.json (written by every stage, not a DVC output). "(reused)" marks a stage that
    started from saved work (a checkpoint, or crawl and align results whose key matched), so its time is not a
    full run's.
    """
    from pipeline.report.times import format_times, stage_order

    columns = {"workspace": Path(".")}
    for folder in saved or []:
        if not (folder / "reports" / "runs").is_dir():
            _fail(f"{folder} holds no reports/runs/ of a saved run; give a folder such as profiles/hour")
        columns[str(folder)] = folder
    order = stage_order(Path("dvc.yaml")) if Path("dvc.yaml").is_file() else []
    typer.echo(format_times(columns, order))


@app.command("cam")
def cam_cmd(
    source: Annotated[Path, typer.Argument(help="a photo (JPEG, PNG, ...) or a video (MP4, AVI, ...).")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="overlay to write: .png for a photo, .gif or .mp4 for a video.")
    ],
    model: Annotated[Path | None, typer.Option(help="cam.pt to use (default: cam.model).")] = None,
    params: ParamsOption = DEFAULT_PARAMS,
    set_: list[str] | None = set_option("cam.model=models/cam.pt"),
) -> None:
    """Where is the face? The CAM model's heat map, predicted identity and box on a photo or every video frame."""
    from pipeline.core.checkpoint import CheckpointError
    from pipeline.core.storage import OutputError
    from pipeline.infer.cam import CamInputError, cam_photo, cam_video, decode_photo, face_found, video_frames
    from pipeline.infer.photo import PhotoError, check_output, is_image, read_photo_bytes
    from pipeline.models.cam import load_cam

    model = model or Path(with_overrides(params, set_).cam.model)
    try:
        data = read_photo_bytes(source, "a photo or a video")
        check_output(out)
        cam = load_cam(model)
        if is_image(data):  # by its bytes: a damaged photo is a damaged photo, never a one-frame video
            rgb = decode_photo(data, source)
            answer = cam_photo(cam, rgb, out)
            where = (
                "no box (a flat map)"
                if answer.box is None
                else "box x={:.0f} y={:.0f} w={:.0f} h={:.0f}".format(*answer.box)
            )
            typer.echo(f"{answer.identity} {answer.probability:.1%}; {where}; wrote {out}")
            if reason := face_found(rgb):
                typer.secho(
                    f"note: align's face detector finds no usable face in {source} ({reason}): the map shows where "
                    "the model looks, and the identity is a guess",
                    err=True,
                    fg=typer.colors.YELLOW,
                )
            return
        frames, count, fps = video_frames(source)
        answers = cam_video(cam, frames, count, fps, out)
        boxed = sum(a.box is not None for a in answers)
        typer.echo(f"{len(answers)} frames, {boxed} with a box; wrote {out}")
        if count > len(answers):
            typer.secho(
                f"note: {count - len(answers)} of the {count} frames its header lists could not be read (a damaged "
                "or cut video?)",
                err=True,
                fg=typer.colors.YELLOW,
            )
    except (FileNotFoundError, CheckpointError, CamInputError, ParamsError, PhotoError, OutputError) as exc:
        _fail(str(exc))


@align_app.command("eval")
def align_eval_cmd(
    root: Annotated[Path, typer.Option(help="faces-landmarks folder (annotations.csv + images/).")] = Path(
        "../shared/data/faces-landmarks"
    ),
    params: ParamsOption = DEFAULT_PARAMS,
    set_: list[str] | None = set_option("align.eye_method=geometry"),
    out: Annotated[Path | None, typer.Option(help="also write the figures as JSON here.")] = None,
    rows: Annotated[Path | None, typer.Option(help="write one row per annotated face (.parquet or .csv).")] = None,
    subset: Annotated[str | None, typer.Option(help="score one subset only (lfw, voc).")] = None,
) -> None:
    """Detection recall and eye-centre error (NME) of the current align params on annotated photos."""
    import json

    from pipeline.faces.landmark_eval import landmark_figures, landmark_rows, write_landmark_rows

    if not (root / "annotations.csv").is_file():
        _fail(f"{root}/annotations.csv not found; pass --root <folder with annotations.csv and images/>")
    try:
        table = landmark_rows(root, with_overrides(params, set_).align, subset)
    except ValueError as err:
        _fail(str(err))
    figures = landmark_figures(table)
    for name, value in figures.items():
        if name != "subsets":
            typer.echo(f"{name:>28}: {value:.4f}" if isinstance(value, float) else f"{name:>28}: {value}")
    for name, part in figures["subsets"].items():
        typer.echo(f"{name:>28}: {part['n_faces']} faces, recall (IoU >= 0.5) {part['recall_iou50']:.4f}")
    if out is not None:
        from pipeline.core.storage import atomic_write_json

        atomic_write_json(out, json.loads(json.dumps(figures, default=float)))
    if rows is not None:
        write_landmark_rows(table, rows)


@align_app.command("check")
def align_check_cmd(
    faces_dev: Annotated[Path, typer.Option(help="folder of <identity>/<photos> to compose and align.")] = Path(
        "../shared/data/faces-dev"
    ),
    landmarks: Annotated[Path, typer.Option(help="faces-landmarks folder (its VOC group photos).")] = Path(
        "../shared/data/faces-landmarks"
    ),
    sandbox: Annotated[bool, typer.Option(help="also render and align the sandbox ground-truth set.")] = True,
    stride: Annotated[int, typer.Option(min=1, help="compose every stride-th faces-dev photo.")] = 1,
    params: ParamsOption = DEFAULT_PARAMS,
    set_: list[str] | None = set_option("align.verify=false"),
    out: Annotated[Path | None, typer.Option(help="also write the figures as JSON here.")] = None,
) -> None:
    """Precision and recall of the align params where the truth is known (README's goal table)."""
    import functools

    from pipeline.faces.align import align_face, face_boxes
    from pipeline.faces.quality_eval import composite_rows, photo_rows, sandbox_rows, summarise_quality, voc_rows

    for folder, what in ((faces_dev, "--faces-dev"), (landmarks / "annotations.csv", "--landmarks")):
        if not folder.exists():
            _fail(f"{folder} not found; pass {what} <folder>")
    align = with_overrides(params, set_).align
    aligner = functools.partial(align_face, params=align)
    figures = summarise_quality(
        sandbox=sandbox_rows(aligner) if sandbox else None,
        voc=voc_rows(lambda rgb: face_boxes(rgb, align), landmarks),
        composites=composite_rows(aligner, faces_dev, stride=stride),
        photos=photo_rows(aligner, faces_dev),
    )
    for name, value in figures.items():
        typer.echo(f"{name:>46}: {value:.4f}" if isinstance(value, float) else f"{name:>46}: {value}")
    if out is not None:
        from pipeline.core.storage import atomic_write_json

        atomic_write_json(out, figures)


if __name__ == "__main__":
    app()
