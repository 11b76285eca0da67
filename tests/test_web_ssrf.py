"""The SSRF guard's address checks. A stub resolver stands in for DNS, and nothing connects:
the guard decides before any connection is made."""

from __future__ import annotations

import ipaddress

import pytest

from workers.errors import BlockedURL
from workers.net.ssrf import AddressGuard, IPAddress, parse_ipv4, refusal


class StubResolver:
    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.asked.append(host)
        if host not in self.table:
            raise BlockedURL(f"cannot resolve {host}")
        return [ipaddress.ip_address(a) for a in self.table[host]]


PUBLIC = {"example.com": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]}


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.255.0.9",
        "10.0.0.1",
        "172.16.5.4",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "169.254.0.1",
        "100.64.0.1",  # CGNAT
        "0.0.0.0",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.2.1",
        "198.18.0.1",
        "::",
        "::1",
        "fe80::1",
        "fc00::1",
        "fd00:ec2::254",  # AWS metadata over IPv6
        "ff02::1",
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "::ffff:169.254.169.254",
        "::ffff:10.0.0.1",
        "::127.0.0.1",  # IPv4-compatible
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2001:db8::1",
        "2001::1",  # Teredo
        "::ffff:0:7f00:1",  # IPv4-translated 127.0.0.1
        "::ffff:0:a9fe:a9fe",  # IPv4-translated metadata
        "64:ff9b:1::a00:1",  # local-use NAT64 of 10.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "2001:0:808:808::f5ff:fffe",  # Teredo, client 10.0.0.1 (stored inverted)
        "2001:0:a00:1::f7f7:f7f7",  # Teredo via a private relay, public client 8.8.8.8
        "2001:db8::5efe:a00:1",  # ISATAP of 10.0.0.1 (and a documentation prefix)
        "2606:4700::5efe:a9fe:a9fe",  # ISATAP of the metadata address under a public prefix
        "2606:4700::200:5efe:7f00:1",  # ISATAP, universal/local bit set
        "::8.8.8.8",  # IPv4-compatible: deprecated, refused even around a public address
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize(
    "address",
    [
        "93.184.215.14",
        "8.8.8.8",
        "1.1.1.1",
        "2606:4700:4700::1111",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
        "::ffff:0:808:808",  # IPv4-translated 8.8.8.8
        "64:ff9b:1::808:808",
        "2002:808:808::1",  # 6to4 of 8.8.8.8
        "2001:0:101:101::f7f7:f7f7",  # Teredo: relay 1.1.1.1, client 8.8.8.8
        "2606:4700::5efe:808:808",  # ISATAP of 8.8.8.8
    ],
)
def test_public_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("2130706433", "127.0.0.1"),  # decimal
        ("0177.0.0.1", "127.0.0.1"),  # octal
        ("0x7f.0.0.1", "127.0.0.1"),  # hex part
        ("0x7f000001", "127.0.0.1"),  # hex whole
        ("127.1", "127.0.0.1"),  # short form
        ("127.0.1", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("017700000001", "127.0.0.1"),  # octal whole
        ("0xA9.0xFE.0xA9.0xFE", "169.254.169.254"),
        ("8.8.8.8", "8.8.8.8"),
    ],
)
def test_ipv4_spellings(host: str, expected: str) -> None:
    assert parse_ipv4(host) == ipaddress.IPv4Address(expected)


@pytest.mark.parametrize("host", ["example.com", "256.1.1.1", "1.2.3.4.5", "0x1g", "08.1.1.1", "", "1..1"])
def test_not_ipv4(host: str) -> None:
    assert parse_ipv4(host) is None


@pytest.mark.anyio
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://localhost:8080/admin",
        "http://2130706433/",
        "http://0177.0.0.1/",
        "http://0x7f.1/",
        "http://127.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://intranet.corp/",
        "http://rebind.example/",  # one public and one private answer
        "https://user:pass@127.0.0.1/",
        "http://example.com@10.0.0.1/",  # userinfo trick: the host is 10.0.0.1
        "http://127.0.0.1./",
        "http://[fe80::1%25eth0]/",
    ],
)
async def test_guard_refuses(url: str) -> None:
    resolver = StubResolver(
        {
            "localhost": ["127.0.0.1", "::1"],
            "metadata.google.internal": ["169.254.169.254"],
            "intranet.corp": ["192.168.10.5"],
            "rebind.example": ["93.184.215.14", "10.1.2.3"],
        }
    )
    with pytest.raises(BlockedURL, match=r"^Refused to fetch .+: it is an? .+, not a public one\.$"):
        await AddressGuard(resolver=resolver).check(url)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "file:///etc/passwd",
        "gopher://example.com/",
        "http:///nohost",
        "http://256.0.0.1/",
    ],
)
async def test_guard_refuses_bad_urls(url: str) -> None:
    with pytest.raises(BlockedURL):
        await AddressGuard(resolver=StubResolver(PUBLIC)).check(url)


@pytest.mark.anyio
async def test_public_url_is_pinned_to_a_checked_address() -> None:
    resolver = StubResolver(PUBLIC)
    target = await AddressGuard(resolver=resolver).check("HTTPS://Example.COM:443/a/b?x=1#frag")
    assert target.url == "https://example.com/a/b?x=1"
    assert target.host == "example.com"
    assert target.host_header == "example.com"
    assert str(target.address) == "93.184.215.14"
    assert target.pinned_url == "https://93.184.215.14:443/a/b?x=1"
    assert resolver.asked == ["example.com"]


@pytest.mark.anyio
async def test_ipv6_pinning_and_non_default_port() -> None:
    target = await AddressGuard(resolver=StubResolver({})).check("http://[2606:4700:4700::1111]:8080/")
    assert target.pinned_url == "http://[2606:4700:4700::1111]:8080/"
    assert target.host_header == "[2606:4700:4700::1111]:8080"


@pytest.mark.anyio
async def test_numeric_hosts_never_reach_dns() -> None:
    resolver = StubResolver({})
    target = await AddressGuard(resolver=resolver).check("http://134744072/")  # 8.8.8.8
    assert str(target.address) == "8.8.8.8"
    assert resolver.asked == []


@pytest.mark.anyio
async def test_allow_list_by_address_range_and_by_host() -> None:
    resolver = StubResolver({"wiki.internal": ["10.1.2.3"], "localhost": ["127.0.0.1"]})
    guard = AddressGuard(["127.0.0.1", "10.9.0.0/16", "Wiki.Internal"], resolver)
    assert str((await guard.check("http://127.0.0.1:9999/x")).address) == "127.0.0.1"
    assert str((await guard.check("http://localhost/")).address) == "127.0.0.1"
    assert str((await guard.check("http://10.9.8.7/")).address) == "10.9.8.7"
    assert str((await guard.check("http://wiki.internal/")).address) == "10.1.2.3"
    with pytest.raises(BlockedURL):
        await guard.check("http://127.0.0.2/")
    with pytest.raises(BlockedURL):
        await guard.check("http://10.8.0.1/")


def test_bad_allow_list_entry_fails_at_start_up() -> None:
    with pytest.raises(ValueError, match="allow_hosts"):
        AddressGuard(["not a host!"])


@pytest.mark.anyio
async def test_unresolvable_host_is_refused() -> None:
    with pytest.raises(BlockedURL, match="resolve"):
        await AddressGuard(resolver=StubResolver({})).check("http://nowhere.example/")


@pytest.mark.parametrize(
    ("address", "embedded", "why"),
    [
        ("::ffff:10.0.0.1", "10.0.0.1", "private"),
        ("::ffff:0:7f00:1", "127.0.0.1", "loopback"),
        ("64:ff9b::a9fe:a9fe", "169.254.169.254", "link-local"),
        ("2002:c0a8:101::1", "192.168.1.1", "private"),
        ("2001:0:808:808::f5ff:fffe", "10.0.0.1", "private"),
        ("2606:4700::5efe:a00:1", "10.0.0.1", "private"),
    ],
)
def test_an_embedded_ipv4_address_is_named_in_the_refusal(address: str, embedded: str, why: str) -> None:
    reason = refusal(ipaddress.ip_address(address))
    assert reason is not None
    assert f"form of {embedded}, which is a" in reason and why in reason


@pytest.mark.anyio
async def test_allow_list_entries_can_name_a_port() -> None:
    resolver = StubResolver({"wiki.internal": ["10.1.2.3"], "localhost": ["127.0.0.1"]})
    guard = AddressGuard(["wiki.internal:8080", "127.0.0.1:9999", "10.9.0.0/16:443", "[::1]:8000"], resolver)
    assert str((await guard.check("http://wiki.internal:8080/")).address) == "10.1.2.3"
    assert str((await guard.check("http://127.0.0.1:9999/x")).address) == "127.0.0.1"
    assert str((await guard.check("https://10.9.8.7/")).address) == "10.9.8.7"
    assert str((await guard.check("http://[::1]:8000/")).address) == "::1"
    for other_port in [
        "http://wiki.internal/",
        "http://wiki.internal:8081/",
        "http://127.0.0.1:9998/",
        "http://localhost:80/",
        "http://10.9.8.7/",
        "http://[::1]:8001/",
    ]:
        with pytest.raises(BlockedURL, match=r"^Refused to fetch"):
            await guard.check(other_port)


@pytest.mark.parametrize("entry", ["wiki.internal:http", "10.0.0.1:0", "host:70000", "[::1]:x"])
def test_bad_allow_list_ports_fail_at_start_up(entry: str) -> None:
    with pytest.raises(ValueError, match="allow_hosts"):
        AddressGuard([entry])


@pytest.mark.anyio
async def test_refusals_are_sentences() -> None:
    guard = AddressGuard(resolver=StubResolver({"intranet.corp": ["192.168.10.5"]}))
    with pytest.raises(BlockedURL) as refused:
        await guard.check("http://intranet.corp/")
    assert str(refused.value) == (
        "Refused to fetch intranet.corp (192.168.10.5): it is a private address, not a public one."
    )
    with pytest.raises(BlockedURL) as scheme:
        await guard.check("file:///etc/passwd")
    assert str(scheme.value) == "Only http and https urls can be read, not 'file'."
