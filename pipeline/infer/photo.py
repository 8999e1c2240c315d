"""What a command is handed: a photo checked before any decoding (the crawls' pixel cap), and where it may write."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

from PIL import Image

from pipeline.crawl.validate import ImageLimits, sniff_format

MAX_PIXELS = ImageLimits().max_pixels  # the crawls' own cap (`crawl.*.max_pixels`), reason word too_many_pixels


class PhotoError(ValueError):
    """A photo a user passed cannot be used; the message names it and says what to do."""


def is_image(data: bytes) -> bool:
    """Whether the first bytes are those of a still image format (JPEG, PNG, GIF, BMP, WebP)."""
    return sniff_format(data) is not None


def read_photo_bytes(path: Path, what: str = "a photo", max_pixels: int = MAX_PIXELS) -> bytes:
    """The bytes of the photo at `path`, once it is a readable file whose header is within the pixel cap.

    Raises:
        PhotoError: for a missing path, a folder, an unreadable file, or more pixels than `max_pixels`.
    """
    if path.is_dir():
        raise PhotoError(f"{path} is a folder; pass the path of {what}")
    if not path.is_file():
        raise PhotoError(f"{path} not found; pass the path of {what}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PhotoError(f"{path} cannot be read ({exc.strerror}); pass the path of {what} you can read") from None
    check_pixels(data, path, max_pixels)
    return data


def check_pixels(data: bytes, path: Path, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse an image whose header declares more than `max_pixels` pixels, before anything decodes it.

    Raises:
        PhotoError: with the crawls' reason word, too_many_pixels.
    """
    if not is_image(data):
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:  # reads the header only
                width, height = image.size
    except Image.DecompressionBombError:
        width, height = max_pixels + 1, 1
    except (OSError, SyntaxError, ValueError):
        return  # a damaged header: the decoder names it
    if width * height > max_pixels:
        raise PhotoError(
            f"{path} is {width}x{height} pixels, more than the {max_pixels:,} the crawls accept (too_many_pixels); "
            "pass a smaller photo"
        )


def check_output(out: Path) -> None:
    """Refuse an output that cannot be written before any work is done: a folder in the way, a folder not writable.

    Raises:
        PhotoError: naming the output and what to do.
    """
    if out.is_dir():
        raise PhotoError(f"{out} is a folder; pass the path of the file to write, e.g. {out / 'out.png'}")
    folder = out.parent if str(out.parent) else Path(".")
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise PhotoError(f"{out} cannot be written: {existing} is not a folder you can write to; choose another -o")


PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")


def photo_files(paths: list[Path]) -> list[tuple[Path, Path]]:
    """The photos named, each with the name its outputs take: a file as given (its stem), a folder's photo files at
    any depth (by suffix, sorted) under their path inside that folder, without the suffix, so that a folder of
    `<person>/<photos>` keeps its layout.

    Raises:
        PhotoError: for a path that does not exist, or when no photo is left.
    """
    files: list[tuple[Path, Path]] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
            files += [(p, p.relative_to(path).with_suffix("")) for p in found]
        elif path.exists():
            files.append((path, Path(path.stem)))
        else:
            raise PhotoError(f"{path} not found; pass photos or folders of photos")
    if not files:
        shown = ", ".join(str(p) for p in paths)
        raise PhotoError(f"no photo ({'/'.join(PHOTO_SUFFIXES)}) in {shown}; pass photos or folders of photos")
    return files
