"""icrawler search engines with a configurable base URL and many identities per run.

icrawler 0.6.10 hard-codes each engine's host in its Feeder. The feeders here take `base_url` (the real host by
default, the sandbox or a test server otherwise) and a list of identities; the parsers reuse icrawler's own page
parsing and tag every image URL with the identity whose search page it came from.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from icrawler import Feeder, Parser
from icrawler.builtin.baidu import BaiduParser
from icrawler.builtin.bing import BingParser
from icrawler.builtin.google import GoogleParser

from pipeline.crawl.fetch import excerpt

REAL_HOSTS = {
    "bing": "https://www.bing.com",
    "google": "https://www.google.com",
    "baidu": "http://image.baidu.com",
    "flickr": "https://api.flickr.com",
}


@dataclass(frozen=True)
class PageProblem:
    """A search result page that gave no usable answer, in the engine's own words."""

    identity: str
    url: str
    reason: str  # search_unreachable | search_error | search_unparsed (schema.REASONS)
    words: str


class SearchError(Exception):
    """A search page that answered with an error document (Flickr's `stat: fail`); the message is its words."""


class PageStats:
    """Thread-safe record of the search pages: answered, their candidates, and the ones that gave nothing usable."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pages: Counter[str] = Counter()  # answered and parsed pages per identity
        self.candidates: Counter[str] = Counter()
        self.no_results: dict[str, str] = {}  # identity -> what its first page without a single result said
        self.emitted: list[tuple[str, str, int]] = []  # every (identity, url, rank) handed to the downloader
        self._problems: dict[str, PageProblem] = {}  # by page URL; a later answer to the same URL clears it

    def problem(self, problem: PageProblem) -> None:
        with self.lock:
            self._problems[problem.url] = problem

    def add(self, identity: str, url: str, found: int, said: str) -> None:
        with self.lock:
            self._problems.pop(url, None)
            self.pages[identity] += 1
            self.candidates[identity] += found
            if not found:
                self.no_results.setdefault(identity, said)

    @property
    def problems(self) -> list[PageProblem]:
        """Pages that never gave a usable answer, in identity and URL order."""
        with self.lock:
            return sorted(self._problems.values(), key=lambda p: (p.identity, p.url))

    @property
    def answered(self) -> int:
        """Pages that answered at all, usable or not."""
        with self.lock:
            return sum(self.pages.values()) + sum(p.reason != "search_unreachable" for p in self._problems.values())


class _RecordingSession:
    """The parser's requests.Session, noting every page request that got no answer at all."""

    def __init__(self, session: Any, stats: PageStats, engine: str) -> None:
        self._session, self._stats, self._engine = session, stats, engine

    def get(self, url: str, **kwargs: Any) -> Any:
        try:
            return self._session.get(url, **kwargs)
        except Exception as exc:  # icrawler's loop retries and logs; the reason must survive for the report
            identity = page_identity(self._engine, url)
            self._stats.problem(PageProblem(identity, url, "search_unreachable", f"{type(exc).__name__}: {exc}"))
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def page_urls(engine: str, base_url: str, identity: str, count: int, api_key: str = "") -> list[str]:
    """The search-result page URLs that cover the first `count` results of `identity` on `engine`."""
    if engine in ("bing", "sandbox"):
        return [
            f"{base_url}/images/async?{urlencode({'q': identity, 'first': i, 'count': 35})}"
            for i in range(0, count, 35)
        ]
    if engine == "google":
        pages = range(0, count, 100)
        return [
            f"{base_url}/search?{urlencode({'q': identity, 'ijn': i // 100, 'start': i, 'tbm': 'isch'})}" for i in pages
        ]
    if engine == "baidu":
        query = {"tn": "resultjson_com", "ipn": "rj"}
        return [
            f"{base_url}/search/acjson?{urlencode({**query, 'word': identity, 'pn': i, 'rn': 30})}"
            for i in range(0, count, 30)
        ]
    if engine == "flickr":
        query = {"method": "flickr.photos.search", "api_key": api_key, "text": identity, "per_page": 100}
        query.update(format="json", nojsoncallback=1, sort="relevance")
        return [f"{base_url}/services/rest/?{urlencode({**query, 'page': p})}" for p in range(1, count // 100 + 2)]
    raise ValueError(f"unknown engine {engine!r}; expected one of {sorted(REAL_HOSTS)}")


IDENTITY_PARAM = {"sandbox": "q", "bing": "q", "google": "q", "baidu": "word", "flickr": "text"}
OFFSET_PARAM = {"sandbox": "first", "bing": "first", "google": "start", "baidu": "pn"}


def page_identity(engine: str, url: str) -> str:
    """The identity a search page URL asks for."""
    return parse_qs(urlsplit(url).query).get(IDENTITY_PARAM[engine], [""])[0]


def page_offset(engine: str, query: dict[str, list[str]]) -> int:
    """The rank of the first result on a page, from the page URL's query."""
    try:
        if engine == "flickr":
            return (int(query.get("page", ["1"])[0]) - 1) * int(query.get("per_page", ["100"])[0])
        return int(query.get(OFFSET_PARAM[engine], ["0"])[0])
    except ValueError:
        return 0


class MultiIdentityFeeder(Feeder):
    """Puts the result pages of every identity on the parser's queue."""

    def feed(self, engine: str, base_url: str, identities: list[str], per_identity: int, api_key: str = "") -> None:
        for identity in identities:
            for url in page_urls(engine, base_url, identity, per_identity, api_key):
                self.out_queue.put(url)


class _Tagging(Parser):
    """Mixin over an icrawler parser: tags each image URL with the identity of its page and its rank."""

    engine = "bing"

    def __init__(self, *args: Any, stats: PageStats, per_identity: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stats = stats
        self.raw_session = self.session
        self.session = _RecordingSession(self.session, stats, self.engine)
        self.per_identity = per_identity
        self._seen: dict[str, set[str]] = {}
        self._seen_lock = threading.Lock()

    def image_urls(self, response: Any) -> list[str]:
        return [task["file_url"] for task in super().parse(response) or ()]  # icrawler's own page parsing

    def output(self, task: Any, block: bool = True, timeout: float | None = None) -> None:
        """Hand a task to the downloaders, waiting as long as it takes.

        icrawler's parser loop calls `output(task, timeout=1)` and retries on queue.Full, but its CachedQueue
        records the task as seen before the put, so the retry is dropped as a duplicate and the task is lost.
        A blocking put never raises Full; the downloaders run until the parsers have exited.
        """
        del block, timeout  # icrawler's loop passes them; a blocking put without a timeout is the point
        super().output(task, block=True, timeout=None)

    def parse(self, response: Any) -> Iterator[dict[str, Any]]:
        url = response.request.url
        query = parse_qs(urlsplit(url).query)
        identity = query.get(IDENTITY_PARAM[self.engine], [""])[0]
        offset = page_offset(self.engine, query)
        said = excerpt(response.content or b"")
        if response.status_code != 200:
            problem = PageProblem(identity, url, "search_error", f"answered {response.status_code}: {said}")
            self.stats.problem(problem)
            return
        try:
            urls = self.image_urls(response)
        except SearchError as exc:
            self.stats.problem(PageProblem(identity, url, "search_error", str(exc)))
            return
        except Exception as exc:  # a page in a format the parser cannot read: recorded, and the crawl goes on
            self.stats.problem(PageProblem(identity, url, "search_unparsed", f"{type(exc).__name__}: {exc}"))
            return
        self.stats.add(identity, url, len(urls), said)
        # The rank is the position in the engine's result list, whatever order the parser threads finish pages in,
        # so the same results always give the same candidates.
        for rank, url in enumerate(urls, start=offset):
            if rank >= self.per_identity:
                break
            with self._seen_lock:  # overlapping pages repeat URLs: one task per identity and URL
                seen = self._seen.setdefault(identity, set())
                if url in seen:
                    continue
                seen.add(url)
                self.stats.emitted.append((identity, url, rank))
            yield {"file_url": url, "identity": identity, "rank": rank}


class BingTaggingParser(_Tagging, BingParser):
    engine = "bing"


class GoogleTaggingParser(_Tagging, GoogleParser):
    engine = "google"


class BaiduTaggingParser(_Tagging, BaiduParser):
    engine = "baidu"


class FlickrTaggingParser(_Tagging):
    engine = "flickr"

    def image_urls(self, response: Any) -> list[str]:
        """Flickr answers photo ids; one getSizes call per photo gives its largest image URL."""
        content = json.loads(response.content.decode("utf-8", "ignore"))
        if content.get("stat") != "ok":
            raise SearchError(f"flickr answered {json.dumps(content)[:300]}")
        query = parse_qs(urlsplit(response.request.url).query)
        base = response.request.url.split("/services/rest/")[0]
        urls = []
        for photo in content["photos"]["photo"]:
            params = {"method": "flickr.photos.getSizes", "api_key": query["api_key"][0], "photo_id": photo["id"]}
            params.update(format="json", nojsoncallback=1)
            info = self.raw_session.get(f"{base}/services/rest/?{urlencode(params)}", timeout=20).json()
            if info.get("stat") != "ok":
                continue
            by_label = {str(s["label"]).lower(): s["source"] for s in info["sizes"]["size"]}
            best = next((by_label[k] for k in ("original", "large", "medium 800", "medium") if k in by_label), None)
            if best:
                urls.append(best)
        return urls


def parser_class(engine: str) -> type[_Tagging]:
    """The tagging parser for an engine (`sandbox` speaks Bing's format)."""
    return {
        "sandbox": BingTaggingParser,
        "bing": BingTaggingParser,
        "google": GoogleTaggingParser,
        "baidu": BaiduTaggingParser,
        "flickr": FlickrTaggingParser,
    }[engine]


class UrlListFeeder(Feeder):
    """Feeds (identity, url) pairs from a `urls` source straight to the downloader's tasks."""

    def feed(self, pairs: list[tuple[str, str]]) -> None:
        for rank, (identity, url) in enumerate(pairs):
            self.out_queue.put(json.dumps({"file_url": url, "identity": identity, "rank": rank}))


class PassThroughParser(Parser):
    """Turns the fed JSON tasks into downloader tasks without fetching any page."""

    def worker_exec(self, queue_timeout: float) -> None:  # called with our parser_kwargs
        import queue

        while not self.signal.get("reach_max_num"):
            try:
                item = self.in_queue.get(timeout=queue_timeout)
            except queue.Empty:
                if self.signal.get("feeder_exited"):
                    return
                continue
            self.output(json.loads(item))
