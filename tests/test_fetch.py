"""One retry loop for both HTTP clients: the same URL fails the same way through aiohttp and through requests."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import aiohttp
import pytest
import requests

from pipeline.core.params import FaultParams
from pipeline.crawl.fetch import FetchFailed, RetryPolicy, fetch_bytes, fetch_image, run_blocking, with_retries
from pipeline.crawl.validate import ImageLimits
from pipeline.sandbox.server import SandboxServer


def both_clients(url: str, policy: RetryPolicy, max_bytes: int) -> tuple[tuple, tuple]:
    async def through_aiohttp() -> tuple:
        async with aiohttp.ClientSession() as session:
            out = await fetch_image(session, url, ImageLimits(max_bytes=max_bytes), policy, 5, random.Random(0))
        return out.reason, out.detail, out.attempts, out.http_status

    with pytest.raises(FetchFailed) as failed:
        fetch_bytes(requests.Session(), url, max_bytes, policy, 5)
    blocking = failed.value
    return asyncio.run(through_aiohttp()), (blocking.reason, blocking.detail, blocking.attempts, blocking.http_status)


@pytest.mark.parametrize(
    ("path", "faults", "max_bytes", "expected"),
    [
        ("/photos/avery_quinn/0.jpg", FaultParams(error_503=1.0, retry_after_s=0.0), 10**7, ("http_503", 3, 503)),
        ("/photos/avery_quinn/gone-1.jpg", FaultParams(), 10**7, ("http_404", 1, 404)),
        ("/photos/avery_quinn/1.jpg", FaultParams(), 2048, ("too_large", 1, 200)),
    ],
)
def test_aiohttp_and_requests_share_the_loop_and_the_words(
    sandbox_server: Callable[..., SandboxServer], path: str, faults: FaultParams, max_bytes: int, expected: tuple
) -> None:
    server = sandbox_server(faults)
    policy = RetryPolicy(retries=2, backoff_s=0.0, backoff_max_s=0.0)
    async_result, blocking_result = both_clients(server.url + path, policy, max_bytes)
    assert async_result == blocking_result  # reason, the server's words, attempts and status alike
    assert (async_result[0], async_result[2], async_result[3]) == expected


def test_the_loop_runs_without_an_event_loop_and_refuses_a_coroutine_that_suspends() -> None:
    async def sleeps() -> None:
        await asyncio.sleep(0)  # suspends once, as any real wait would

    with pytest.raises(RuntimeError, match="suspends"):
        run_blocking(sleeps())
    calls: list[str] = []

    async def flaky() -> str:
        from pipeline.crawl.fetch import Transient

        calls.append("try")
        if calls.count("try") < 3:
            raise Transient("timeout", "slow")
        return "done"

    async def no_wait(seconds: float) -> None:
        calls.append("wait")

    result = run_blocking(with_retries(flaky, RetryPolicy(retries=4), random.Random(0), no_wait))
    assert result == ("done", 3) and calls == ["try", "wait", "try", "wait", "try"]
