"""HTTP fetching with one retry loop (jittered backoff, Retry-After) for aiohttp and requests, size caps, validation."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp

from pipeline.crawl.validate import ImageLimits, ImageRejected, ValidImage, validate_image

# Statuses worth another try: the server said "later" or failed transiently.
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
USER_AGENT = "img2caricature/0.1 (+https://github.com/img2caricature)"


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before trying a URL again."""

    retries: int = 4
    backoff_s: float = 0.25
    backoff_max_s: float = 10.0
    retry_after_cap_s: float = 120.0  # a server asking for longer than this is treated as down

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to sleep after failed attempt `attempt` (1-based): jittered exponential backoff, >= Retry-After."""
        backoff = min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1)) * rng.uniform(0.5, 1.0)
        if retry_after is not None:
            return max(backoff, min(retry_after, self.retry_after_cap_s))
        return backoff


@dataclass(frozen=True)
class FetchOutcome:
    """What became of one image URL after all its attempts: a valid image, or the reason there is none."""

    url: str
    reason: str  # "" when there is an image
    detail: str
    attempts: int
    http_status: int | None
    image: ValidImage | None


@dataclass(frozen=True)
class FetchedBytes:
    """A complete 200 response body, not yet validated."""

    data: bytes
    content_type: str | None
    attempts: int


class Transient(Exception):
    """A failure of the moment (5xx, 429, a timeout, a dropped connection): worth another attempt."""

    def __init__(self, reason: str, detail: str, http_status: int | None = None, retry_after: float | None = None):
        super().__init__(detail)
        self.reason, self.detail, self.http_status, self.retry_after = reason, detail, http_status, retry_after


class FetchFailed(Exception):
    """A URL that gave no usable body; `reason` is the manifest's reason code, `detail` the server's own words."""

    def __init__(self, reason: str, detail: str, attempts: int = 0, http_status: int | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.attempts, self.http_status = reason, detail, attempts, http_status


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


T = TypeVar("T")


async def with_retries(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    rng: random.Random,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> tuple[T, int]:
    """The one retry loop of every fetch: run `attempt` until it succeeds, fails for good, or retries run out.

    Returns:
        (what `attempt` returned, how many attempts it took).

    Raises:
        FetchFailed: with the attempts counted; a `Transient` failure becomes one after the last retry.
    """
    attempts = 0
    while True:
        attempts += 1
        try:
            return await attempt(), attempts
        except FetchFailed as failed:
            failed.attempts = attempts
            raise
        except Transient as retry:
            if attempts > policy.retries:
                detail = f"{retry.detail} (gave up after {attempts} attempts)"
                raise FetchFailed(retry.reason, detail, attempts, retry.http_status) from None
            await sleep(policy.delay(attempts, retry.retry_after, rng))


def run_blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (blocking I/O inside `async def`) without an event loop.

    This lets icrawler's downloader threads, which use blocking `requests`, share `with_retries` with the async
    crawler instead of keeping a second copy of the loop.
    """
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("run_blocking got a coroutine that suspends; await it in an event loop instead")


def excerpt(body: bytes, limit: int = 200) -> str:
    """What an error body says, as one short line: tags dropped, whitespace collapsed."""
    text = re.sub(r"<[^>]*>", " ", body[: limit * 8].decode("utf-8", "replace"))
    text = " ".join(text.split())
    return text[:limit] + ("…" if len(text) > limit else "")


def check_status(status: int, retry_after: str | None, body: bytes) -> None:
    """Turn a non-200 status into a Transient (worth retrying) or a FetchFailed, quoting what the server said."""
    if status == 200:
        return
    said = excerpt(body)
    detail = f"server answered {status}" + (f": {said}" if said else "")
    if status in RETRYABLE_STATUS:
        raise Transient(f"http_{status}", detail, status, parse_retry_after(retry_after))
    raise FetchFailed(f"http_{status}", detail, http_status=status)


def _too_large(size: int | None, max_bytes: int, status: int) -> FetchFailed:
    # The same words as validate_image's, so a body refused here or re-validated from disk later reads the same.
    said = f"{size} bytes exceeds" if size is not None else "the body exceeds"
    return FetchFailed("too_large", f"{said} max_bytes={max_bytes}", http_status=status)


# ---- aiohttp (the avatar crawl) ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _aiohttp_get(session: aiohttp.ClientSession, url: str, timeout_s: float) -> AsyncIterator[Any]:
    """session.get with every client exception turned into a Transient or a FetchFailed."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            yield response
    except TimeoutError:
        raise Transient("timeout", f"no complete answer within {timeout_s:g} s") from None
    except aiohttp.ClientPayloadError as exc:
        raise Transient("truncated", f"body ended early: {exc}") from None
    except aiohttp.ServerDisconnectedError as exc:
        raise Transient("truncated", f"server disconnected: {exc}") from None
    except aiohttp.InvalidURL as exc:
        raise FetchFailed("bad_url", f"invalid URL: {exc}") from None
    except aiohttp.ClientConnectionError as exc:
        raise Transient("connection_error", f"{type(exc).__name__}: {exc}") from None
    except aiohttp.ClientError as exc:
        raise Transient("http_error", f"{type(exc).__name__}: {exc}") from None


async def _read_capped(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    declared = response.content_length
    if declared is not None and declared > max_bytes:
        raise _too_large(declared, max_bytes, response.status)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(None, max_bytes, response.status)
        chunks.append(chunk)
    return b"".join(chunks)


async def fetch_image(
    session: aiohttp.ClientSession,
    url: str,
    limits: ImageLimits,
    policy: RetryPolicy,
    timeout_s: float,
    rng: random.Random,
    executor: Executor | None = None,
) -> FetchOutcome:
    """Fetch and validate one image URL, retrying transient failures; never raises for network or content faults.

    Validation runs in `executor` (the loop's default pool when None).
    """

    async def attempt() -> ValidImage:
        async with _aiohttp_get(session, url, timeout_s) as response:
            if response.status != 200:
                check_status(response.status, response.headers.get("Retry-After"), await response.content.read(2048))
            body = await _read_capped(response, limits.max_bytes)
            content_type = response.headers.get("Content-Type")
        try:
            # Decoding releases the GIL: in a thread pool it runs beside the event loop instead of stalling it.
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(executor, validate_image, body, content_type, limits)
        except ImageRejected as exc:
            # Content problems are properties of the resource, not of the moment: no retry.
            raise FetchFailed(exc.reason, exc.detail, http_status=200) from None

    try:
        image, attempts = await with_retries(attempt, policy, rng)
    except FetchFailed as failed:
        return FetchOutcome(url, failed.reason, failed.detail, failed.attempts, failed.http_status, None)
    return FetchOutcome(url, "", "", attempts, 200, image)


async def fetch_json(
    session: aiohttp.ClientSession, url: str, policy: RetryPolicy, timeout_s: float, rng: random.Random
) -> Any:
    """GET a JSON document with the same retry rules.

    Raises:
        ConnectionError: naming the URL and what the server said (or why nothing answered).
    """

    async def attempt() -> Any:
        async with _aiohttp_get(session, url, timeout_s) as response:
            body = await response.read()
            check_status(response.status, response.headers.get("Retry-After"), body)
        try:
            return json.loads(body)
        except ValueError as exc:  # a body that is not JSON: a wrong endpoint, not a transient fault
            raise FetchFailed("not_json", f"the answer is not JSON ({exc}): {excerpt(body)}", http_status=200) from None

    try:
        document, _ = await with_retries(attempt, policy, rng)
    except FetchFailed as failed:
        raise ConnectionError(f"GET {url}: {failed.detail}; check the endpoint URL") from None
    return document


# ---- requests (icrawler's downloader threads) ----------------------------------------------------------------------


def _get_blocking(session: Any, url: str, max_bytes: int, timeout_s: float) -> FetchedBytes:
    """One blocking GET with the same failure vocabulary as `_aiohttp_get`."""
    import requests

    try:
        with session.get(url, timeout=timeout_s, stream=True) as response:
            if response.status_code != 200:
                body = next(response.iter_content(2048), b"")
                check_status(response.status_code, response.headers.get("Retry-After"), body)
            declared = response.headers.get("Content-Length")
            if declared and int(declared) > max_bytes:
                raise _too_large(int(declared), max_bytes, 200)
            data = bytearray()
            for chunk in response.iter_content(1 << 16):
                data += chunk
                if len(data) > max_bytes:
                    raise _too_large(None, max_bytes, 200)
            return FetchedBytes(bytes(data), response.headers.get("Content-Type"), 0)
    except requests.exceptions.Timeout:
        raise Transient("timeout", f"no complete answer within {timeout_s:g} s") from None
    except requests.exceptions.ChunkedEncodingError as exc:
        raise Transient("truncated", f"body ended early: {exc}", 200) from None
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema) as e:
        raise FetchFailed("bad_url", f"invalid URL: {e}") from None
    except requests.exceptions.ConnectionError as exc:
        raise Transient("connection_error", f"{type(exc).__name__}: {exc}") from None
    except requests.exceptions.RequestException as exc:
        raise Transient("http_error", f"{type(exc).__name__}: {exc}") from None


def fetch_bytes(session: Any, url: str, max_bytes: int, policy: RetryPolicy, timeout_s: float) -> FetchedBytes:
    """The blocking twin of `fetch_image` for icrawler's downloader threads (a requests.Session).

    Raises:
        FetchFailed: with the same reason codes as the async crawler.
    """

    async def attempt() -> FetchedBytes:
        return _get_blocking(session, url, max_bytes, timeout_s)

    async def sleep(seconds: float) -> None:
        time.sleep(seconds)

    fetched, attempts = run_blocking(with_retries(attempt, policy, random.Random(url), sleep))
    return FetchedBytes(fetched.data, fetched.content_type, attempts)
