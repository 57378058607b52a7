"""``/docs`` works offline: every script, style and icon it loads comes from the gateway."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

import httpx
import pytest

pytestmark = pytest.mark.timeout(60)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, _tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in {"src", "href"} and value:  # on any tag: script, link, img
                self.urls.append(value)


async def test_docs_load_nothing_from_another_host(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    links = _Links()
    links.feed(page.text)
    assert len(links.urls) >= 3, links.urls  # the script, the style, the icon
    assert "http://" not in page.text
    assert "https://" not in page.text
    for url in links.urls:
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc) == ("", ""), url
        assert url.startswith("/"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 100, url
    scripts = [u for u in links.urls if u.endswith(".js")]
    assert scripts
    bundle = await client.get(scripts[0])
    assert "SwaggerUIBundle" in bundle.text
    assert bundle.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    # The page's own script points at this gateway's OpenAPI document, which loads.
    assert "url: '/openapi.json'" in page.text
    assert (await client.get("/openapi.json")).status_code == 200
