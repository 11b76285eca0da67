"""The HTTP client for fetches the SSRF guard pins (`workers.net.ssrf`): web pages and webhooks."""

from __future__ import annotations

import ssl
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx


def page_client(verify: ssl.SSLContext | bool = True) -> httpx.AsyncClient:
    """The client for page fetches. No environment proxies (a proxy would resolve the host
    itself and undo the pinning), no connection reuse (a pooled connection is keyed by the
    pinned address and would carry another host's TLS session), and no cookies kept between
    fetches of different jobs. `verify` is for tests with their own certificate authority."""
    return httpx.AsyncClient(
        verify=verify,
        trust_env=False,
        follow_redirects=False,
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
    )
