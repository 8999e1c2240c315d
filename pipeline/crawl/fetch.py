"""Async image fetching: bounded retries with exponential backoff and jitter, Retry-After, size caps, validation."""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

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
    """What became of one URL after all its attempts."""

    url: str
    reason: str  # "" when ok
    detail: str
    attempts: int
    http_status: int | None
    image: ValidImage | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.image is not None


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


class _Retry(Exception):
    def __init__(self, reason: str, detail: str, http_status: int | None = None, retry_after: float | None = None):
        super().__init__(detail)
        self.reason, self.detail, self.http_status, self.retry_after = reason, detail, http_status, retry_after


class _Final(Exception):
    def __init__(self, reason: str, detail: str, http_status: int | None = None):
        super().__init__(detail)
        self.reason, self.detail, self.http_status = reason, detail, http_status


async def _read_capped(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    declared = response.content_length
    if declared is not None and declared > max_bytes:
        raise _Final("too_large", f"Content-Length {declared} exceeds max_bytes={max_bytes}", response.status)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > max_bytes:
            raise _Final("too_large", f"body exceeds max_bytes={max_bytes}", response.status)
        chunks.append(chunk)
    return b"".join(chunks)


async def _attempt(
    session: aiohttp.ClientSession, url: str, limits: ImageLimits, timeout_s: float, executor: Executor | None
) -> ValidImage:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            if response.status in RETRYABLE_STATUS:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                raise _Retry(
                    f"http_{response.status}", f"server answered {response.status}", response.status, retry_after
                )
            if response.status != 200:
                raise _Final(f"http_{response.status}", f"server answered {response.status}", response.status)
            body = await _read_capped(response, limits.max_bytes)
            content_type = response.headers.get("Content-Type")
    except TimeoutError:
        raise _Retry("timeout", f"no complete answer within {timeout_s:g} s") from None
    except aiohttp.ClientPayloadError as exc:
        raise _Retry("truncated", f"body ended early: {exc}") from None
    except aiohttp.ServerDisconnectedError as exc:
        raise _Retry("truncated", f"server disconnected: {exc}") from None
    except aiohttp.InvalidURL as exc:
        raise _Final("bad_url", f"invalid URL: {exc}") from None
    except aiohttp.ClientConnectionError as exc:
        raise _Retry("connection_error", f"{type(exc).__name__}: {exc}") from None
    except aiohttp.ClientError as exc:
        raise _Retry("http_error", f"{type(exc).__name__}: {exc}") from None
    try:
        # Decoding releases the GIL: in a thread pool it runs beside the event loop instead of stalling it.
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, validate_image, body, content_type, limits)
    except ImageRejected as exc:
        # Content problems are properties of the resource, not of the moment: no retry.
        raise _Final(exc.reason, exc.detail, 200) from None


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
    start = time.perf_counter()
    attempt = 0
    while True:
        attempt += 1
        try:
            image = await _attempt(session, url, limits, timeout_s, executor)
            return FetchOutcome(url, "", "", attempt, 200, image, time.perf_counter() - start)
        except _Final as final:
            return FetchOutcome(
                url, final.reason, final.detail, attempt, final.http_status, None, time.perf_counter() - start
            )
        except _Retry as retry:
            if attempt > policy.retries:
                detail = f"{retry.detail} (gave up after {attempt} attempts)"
                elapsed = time.perf_counter() - start
                return FetchOutcome(url, retry.reason, detail, attempt, retry.http_status, None, elapsed)
            await asyncio.sleep(policy.delay(attempt, retry.retry_after, rng))


async def fetch_json(
    session: aiohttp.ClientSession, url: str, policy: RetryPolicy, timeout_s: float, rng: random.Random
) -> Any:
    """GET a JSON document with the same retry rules.

    Raises:
        ConnectionError: naming the URL and the last reason, when every attempt failed.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
                if response.status in RETRYABLE_STATUS:
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    raise _Retry(f"http_{response.status}", f"answered {response.status}", response.status, retry_after)
                if response.status != 200:
                    raise ConnectionError(f"GET {url} answered {response.status}; check the endpoint URL")
                return await response.json(content_type=None)
        except ValueError as exc:  # a body that is not JSON: a wrong endpoint, not a transient fault
            raise ConnectionError(f"GET {url} did not return JSON ({exc}); check the endpoint URL") from None
        except _Retry as retry:
            if attempt > policy.retries:
                raise ConnectionError(f"GET {url} failed {attempt} times: {retry.detail}") from None
            await asyncio.sleep(policy.delay(attempt, retry.retry_after, rng))
        except (aiohttp.ClientError, TimeoutError) as exc:
            if attempt > policy.retries:
                raise ConnectionError(f"GET {url} failed {attempt} times: {type(exc).__name__}: {exc}") from None
            await asyncio.sleep(policy.delay(attempt, None, rng))


@dataclass(frozen=True)
class FetchedBytes:
    """A complete 200 response body, not yet validated."""

    data: bytes
    content_type: str | None
    attempts: int


class FetchFailed(Exception):
    """A URL that gave no usable body after all attempts; `reason` is the manifest's reason code."""

    def __init__(self, reason: str, detail: str, attempts: int, http_status: int | None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.attempts, self.http_status = reason, detail, attempts, http_status


def fetch_bytes(session: Any, url: str, max_bytes: int, policy: RetryPolicy, timeout_s: float) -> FetchedBytes:
    """The blocking twin of `fetch_image` for icrawler's downloader threads (a requests.Session).

    Raises:
        FetchFailed: with the same reason codes as the async crawler.
    """
    import requests

    rng = random.Random(url)
    attempt = 0
    while True:
        attempt += 1
        retry_after: float | None = None
        try:
            with session.get(url, timeout=timeout_s, stream=True) as response:
                if response.status_code in RETRYABLE_STATUS:
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    raise _Retry(
                        f"http_{response.status_code}",
                        f"server answered {response.status_code}",
                        response.status_code,
                        retry_after,
                    )
                if response.status_code != 200:
                    raise FetchFailed(
                        f"http_{response.status_code}",
                        f"server answered {response.status_code}",
                        attempt,
                        response.status_code,
                    )
                declared = int(response.headers.get("Content-Length") or 0)
                if declared > max_bytes:
                    raise FetchFailed(
                        "too_large", f"Content-Length {declared} exceeds max_bytes={max_bytes}", attempt, 200
                    )
                body = bytearray()
                for chunk in response.iter_content(1 << 16):
                    body += chunk
                    if len(body) > max_bytes:
                        raise FetchFailed("too_large", f"body exceeds max_bytes={max_bytes}", attempt, 200)
                return FetchedBytes(bytes(body), response.headers.get("Content-Type"), attempt)
        except _Retry as retry:
            failure: tuple[str, str, int | None] = (retry.reason, retry.detail, retry.http_status)
        except requests.exceptions.Timeout:
            failure = ("timeout", f"no complete answer within {timeout_s:g} s", None)
        except requests.exceptions.ChunkedEncodingError as exc:
            failure = ("truncated", f"body ended early: {exc}", 200)
        except (
            requests.exceptions.InvalidURL,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema,
        ) as exc:
            raise FetchFailed("bad_url", f"invalid URL: {exc}", attempt, None) from None
        except requests.exceptions.ConnectionError as exc:
            failure = ("connection_error", f"{type(exc).__name__}: {exc}", None)
        except requests.exceptions.RequestException as exc:
            failure = ("http_error", f"{type(exc).__name__}: {exc}", None)
        if attempt > policy.retries:
            reason, detail, status = failure
            raise FetchFailed(reason, f"{detail} (gave up after {attempt} attempts)", attempt, status)
        time.sleep(policy.delay(attempt, retry_after, rng))
