"""Each search provider against its local fake: success (and the locale it sends), the
provider's documented error bodies, 429 and a bad key."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from tests.fake_search_apis import API_KEY, SearchAPIs
from workers.errors import ProviderError
from workers.settings import SearchProviderSettings
from workers.tools.web.providers import (
    BraveProvider,
    SearxngProvider,
    SerperProvider,
    SerperScholarProvider,
    TavilyProvider,
)
from workers.tools.web.types import Locale, SearchProvider, detect_locale

PROVIDER_TYPES: dict[str, Callable[[httpx.AsyncClient, SearchProviderSettings], SearchProvider]] = {
    "searxng": SearxngProvider,
    "serper": SerperProvider,
    "serper-scholar": SerperScholarProvider,
    "tavily": TavilyProvider,
    "brave": BraveProvider,
}


@pytest.fixture(autouse=True)
def reset(apis: SearchAPIs) -> None:
    apis.set("ok")
    apis.requests.clear()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


def provider(
    name: str, apis: SearchAPIs, client: httpx.AsyncClient, key: str = API_KEY, timeout: float = 5.0
) -> SearchProvider:
    base = apis.url("serper" if name == "serper-scholar" else name)
    return PROVIDER_TYPES[name](client, SearchProviderSettings(base_url=base, api_key=key, timeout=timeout))


EN = Locale("en")


@pytest.mark.anyio
@pytest.mark.parametrize("name", list(PROVIDER_TYPES))
async def test_success(name: str, apis: SearchAPIs, client: httpx.AsyncClient) -> None:
    hits = await provider(name, apis, client).search("comet brandvik", 3, EN)
    assert len(hits) == 3
    assert all(h.url.startswith("https://") and h.title and h.snippet for h in hits)
    assert "comet brandvik" in hits[0].title
    assert apis.count(name) == 1


@pytest.mark.anyio
async def test_scholar_snippet_leads_with_publication_facts(
    apis: SearchAPIs, client: httpx.AsyncClient
) -> None:
    hits = await provider("serper-scholar", apis, client).search("orbital mechanics", 2, EN)
    assert hits[0].snippet.startswith(
        "A Author, B Author - Journal of Orbital Mechanics, 2000 · 2000 · cited by 100 — "
    )


@pytest.mark.anyio
@pytest.mark.parametrize("name", list(PROVIDER_TYPES))
async def test_empty_answer_is_no_hits(name: str, apis: SearchAPIs, client: httpx.AsyncClient) -> None:
    apis.set("empty", name)
    assert await provider(name, apis, client).search("nothing at all", 5, EN) == []


# The reason each provider's documented error body gives, as the error should carry it.
RATE_LIMITED = {
    "searxng": "HTTP 429: Too Many Requests",
    "serper": "HTTP 429: Too many requests",
    "serper-scholar": "HTTP 429: Too many requests",
    "tavily": "HTTP 429: Your request has been blocked due to excessive requests",
    "brave": "HTTP 429: Request rate limit exceeded for plan.",
}
BAD_KEY = {
    "serper": (401, "Unauthorized."),
    "serper-scholar": (401, "Unauthorized."),
    "tavily": (401, "Unauthorized: missing or invalid API key."),
    "brave": (422, "The provided subscription token is invalid."),
}
OUT_OF_QUOTA = {
    "serper": (400, "Not enough credits"),
    "tavily": (432, "This request exceeds your plan's set usage limit"),
    "brave": (429, "Request quota limit exceeded for plan."),
    "searxng": (403, "Forbidden"),  # an instance without the json format
}


@pytest.mark.anyio
@pytest.mark.parametrize("name", list(PROVIDER_TYPES))
async def test_429_carries_the_providers_reason(
    name: str, apis: SearchAPIs, client: httpx.AsyncClient
) -> None:
    apis.set("429", name)
    with pytest.raises(ProviderError) as info:
        await provider(name, apis, client).search("q", 5, EN)
    assert info.value.status == 429
    assert RATE_LIMITED[name] in str(info.value)
    assert str(info.value).startswith(f"{name}: ")


@pytest.mark.anyio
@pytest.mark.parametrize("name", list(BAD_KEY))
async def test_bad_key(name: str, apis: SearchAPIs, client: httpx.AsyncClient) -> None:
    with pytest.raises(ProviderError) as info:
        await provider(name, apis, client, key="wrong").search("q", 5, EN)
    status, reason = BAD_KEY[name]
    assert info.value.status == status
    assert reason in str(info.value)


@pytest.mark.anyio
@pytest.mark.parametrize("name", list(OUT_OF_QUOTA))
async def test_quota_errors(name: str, apis: SearchAPIs, client: httpx.AsyncClient) -> None:
    apis.set("quota", name)
    with pytest.raises(ProviderError) as info:
        await provider(name, apis, client).search("q", 5, EN)
    status, reason = OUT_OF_QUOTA[name]
    assert info.value.status == status
    assert reason in str(info.value)


@pytest.mark.anyio
@pytest.mark.parametrize("name", list(PROVIDER_TYPES))
async def test_server_error_and_non_json(name: str, apis: SearchAPIs, client: httpx.AsyncClient) -> None:
    apis.set("500", name)
    with pytest.raises(ProviderError, match="HTTP 500"):
        await provider(name, apis, client).search("q", 5, EN)
    apis.set("garbage", name)
    with pytest.raises(ProviderError, match="not JSON"):
        await provider(name, apis, client).search("q", 5, EN)


@pytest.mark.anyio
async def test_timeout(apis: SearchAPIs, client: httpx.AsyncClient) -> None:
    apis.set("hang", "serper")
    with pytest.raises(ProviderError, match=r"timed out after 0\.2s"):
        await provider("serper", apis, client, timeout=0.2).search("q", 5, EN)


@pytest.mark.anyio
async def test_unreachable_provider(client: httpx.AsyncClient) -> None:
    # A port nothing listens on (bound, never listened).
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        settings = SearchProviderSettings(base_url=f"http://127.0.0.1:{port}", api_key="k", timeout=2)
        with pytest.raises(ProviderError, match="request failed"):
            await SerperProvider(client, settings).search("q", 5, EN)


def test_locale_detection() -> None:
    assert detect_locale("who discovered comet brandvik") == Locale("en")
    assert detect_locale("长城 修建 年代") == Locale("zh")
    assert detect_locale("富士山の高さ") == Locale("ja")
    assert detect_locale("서울 인구") == Locale("ko")
    assert detect_locale("Müller café") == Locale("en")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("name", "query", "expected"),
    [
        ("serper", "长城 修建 年代", {"gl": "cn", "hl": "zh-cn"}),
        ("serper", "富士山の高さ", {"gl": "jp", "hl": "ja"}),
        ("serper", "서울 인구", {"gl": "kr", "hl": "ko"}),
        ("serper", "great wall", {"gl": "us", "hl": "en"}),
        ("searxng", "长城 修建 年代", {"language": "zh-CN", "format": "json"}),
        ("searxng", "富士山の高さ", {"language": "ja"}),
        ("brave", "长城 修建 年代", {"country": "CN", "search_lang": "zh-hans"}),
        ("brave", "富士山の高さ", {"country": "JP", "search_lang": "jp"}),
        ("tavily", "서울 인구", {"country": "south korea"}),
    ],
)
async def test_cjk_queries_are_sent_with_their_locale(
    name: str, query: str, expected: dict[str, str], apis: SearchAPIs, client: httpx.AsyncClient
) -> None:
    await provider(name, apis, client).search(query, 3, detect_locale(query))
    (request,) = apis.requests
    assert request.query == query
    for key, value in expected.items():
        assert str(request.params[key]) == value


@pytest.mark.anyio
async def test_keys_go_in_each_providers_header(apis: SearchAPIs, client: httpx.AsyncClient) -> None:
    for name in ("serper", "tavily", "brave"):
        await provider(name, apis, client).search("q", 1, EN)
    serper, tavily, brave = apis.requests
    assert serper.headers["x-api-key"] == API_KEY
    assert tavily.headers["authorization"] == f"Bearer {API_KEY}"
    assert brave.headers["x-subscription-token"] == API_KEY
    assert int(brave.params["count"]) == 1
    assert tavily.params["max_results"] == 1
