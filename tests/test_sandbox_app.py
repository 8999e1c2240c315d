"""The sandbox avatar API over real HTTP on 127.0.0.1: catalogue, renders, 400s, and each injected fault."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
import requests
from PIL import Image

from pipeline.core import traits
from pipeline.core.params import FaultParams
from pipeline.sandbox.app import ASSETS_PATH, PREVIEW_PATH
from pipeline.sandbox.server import SandboxServer

StartServer = Callable[..., SandboxServer]


def a_query(seed: int = 0) -> dict[str, str]:
    catalogue = traits.parse_catalogue(traits.catalogue_json())
    return traits.sample_specs(catalogue, 1, seed, (1,), (5,))[0].query()


def test_catalogue_and_render(sandbox_server: StartServer) -> None:
    server = sandbox_server()
    assert server.url.startswith("http://127.0.0.1:")
    body = requests.get(server.url + ASSETS_PATH, timeout=10).json()
    assert traits.parse_catalogue(body) == traits.parse_catalogue(traits.catalogue_json())
    response = requests.get(server.url + PREVIEW_PATH, params=a_query(), timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert image.size == (traits.BASE_SIZE, traits.BASE_SIZE)
    again = requests.get(server.url + PREVIEW_PATH, params=a_query(), timeout=10)
    other = requests.get(server.url + PREVIEW_PATH, params=a_query(1), timeout=10)
    assert again.content == response.content and other.content != response.content


@pytest.mark.parametrize(
    ("change", "parameter"),
    [({"gender": "7"}, "gender"), ({"hair": "123"}, "hair"), ({"glasses": "abc"}, "glasses"), ({"tail": "1"}, "tail")],
)
def test_wrong_parameters_get_400_naming_them(sandbox_server: StartServer, change: dict, parameter: str) -> None:
    server = sandbox_server()
    response = requests.get(server.url + PREVIEW_PATH, params={**a_query(), **change}, timeout=10)
    assert response.status_code == 400
    assert response.json()["parameter"] == parameter and parameter in response.json()["error"]


def test_faults_are_served_as_configured(sandbox_server: StartServer) -> None:
    url = PREVIEW_PATH
    kinds = {
        "error_429": lambda r: r.status_code == 429 and r.headers["Retry-After"] == "2",
        "error_500": lambda r: r.status_code == 500,
        "error_503": lambda r: r.status_code == 503 and "Retry-After" in r.headers,
        "wrong_type": lambda r: r.status_code == 200 and r.headers["Content-Type"].startswith("text/html"),
        "corrupt": lambda r: r.status_code == 200 and r.content.startswith(b"\x89PNG"),
        "oversized": lambda r: r.status_code == 200 and r.content[16:24] == (30_000).to_bytes(4, "big") * 2,
    }
    for kind, check in kinds.items():
        server = sandbox_server(FaultParams(retry_after_s=2, **{kind: 1.0}))
        response = requests.get(server.url + url, params=a_query(), timeout=10)
        assert check(response), kind
    server = sandbox_server(FaultParams(truncated=1.0))
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(server.url + url, params=a_query(), timeout=10)


def test_fault_draws_are_per_attempt(sandbox_server: StartServer) -> None:
    server = sandbox_server(FaultParams(error_500=0.5, seed=3))
    codes = [requests.get(server.url + PREVIEW_PATH, params=a_query(), timeout=10).status_code for _ in range(40)]
    assert 5 < codes.count(500) < 35 and 5 < codes.count(200) < 35
