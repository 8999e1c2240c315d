"""Image validation shared by every downloader: content type, magic bytes, size caps and a full decode."""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image

# Magic bytes of the formats a crawler may keep, and the file extension each is saved with.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
)


_ADDRESS = re.compile(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>")


@dataclass(frozen=True)
class ImageLimits:
    """What a downloaded image must satisfy to be kept."""

    max_bytes: int = 8_000_000
    max_pixels: int = 40_000_000
    min_side: int = 1
    formats: frozenset[str] = frozenset({"png", "jpg", "gif", "bmp", "webp"})


@dataclass(frozen=True)
class ValidImage:
    """A downloaded file that decodes and satisfies the limits."""

    data: bytes
    sha256: str
    ext: str
    width: int
    height: int


class ImageRejected(Exception):
    """The bytes are not a usable image; `reason` is the manifest's reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def sniff_format(data: bytes) -> str | None:
    """The image format told by the first bytes, or None."""
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def check_content_type(content_type: str | None) -> None:
    """Reject responses that announce themselves as something other than an image (HTML error pages, JSON).

    A missing or generic `application/octet-stream` type is let through to the magic-byte check.

    Raises:
        ImageRejected: reason `wrong_content_type`.
    """
    if not content_type:
        return
    main = content_type.split(";")[0].strip().lower()
    if main.startswith("image/") or main in ("application/octet-stream", "binary/octet-stream"):
        return
    raise ImageRejected("wrong_content_type", f"server sent {main!r}, not an image type")


def validate_image(data: bytes, content_type: str | None, limits: ImageLimits) -> ValidImage:
    """Check one downloaded body end to end.

    Raises:
        ImageRejected: with reason wrong_content_type, empty, too_large, not_an_image, unsupported_format,
            too_many_pixels, corrupt or too_small.
    """
    check_content_type(content_type)
    if not data:
        raise ImageRejected("empty", "the body is empty")
    if len(data) > limits.max_bytes:
        raise ImageRejected("too_large", f"{len(data)} bytes exceeds max_bytes={limits.max_bytes}")
    ext = sniff_format(data)
    if ext is None:
        raise ImageRejected("not_an_image", f"unknown magic bytes {data[:8]!r}")
    if ext not in limits.formats:
        raise ImageRejected("unsupported_format", f"{ext} is not one of {sorted(limits.formats)}")
    width, height = _decode_size(data, limits)
    if min(width, height) < limits.min_side:
        raise ImageRejected("too_small", f"{width}x{height} is below min_size={limits.min_side}")
    return ValidImage(data, hashlib.sha256(data).hexdigest(), ext, width, height)


def _decode_size(data: bytes, limits: ImageLimits) -> tuple[int, int]:
    """Read the header, refuse decompression bombs before allocating, then decode every pixel."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > limits.max_pixels:
                    raise ImageRejected("too_many_pixels", f"{width}x{height} exceeds max_pixels={limits.max_pixels}")
                image.load()  # a truncated or damaged stream raises here
    except ImageRejected:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageRejected("too_many_pixels", str(exc)) from None
    except (OSError, SyntaxError, ValueError) as exc:
        # PIL names the stream object with its memory address; a manifest must read the same on every run.
        said = _ADDRESS.sub("", str(exc))
        raise ImageRejected("corrupt", f"does not decode: {said}") from None
    return width, height
