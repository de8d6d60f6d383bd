"""Downloading a media file by URL within a size limit: refused by its Content-Length before the
body is read, and counted while reading (a server may omit or understate the length).

Used for the image URLs channels hand us (WeCom's `PicUrl`, the AI bot's encrypted image URLs,
bridge frames) and for the image endpoint's result URLs; what the bytes are is decided afterwards
by sniffing, never by the Content-Type.

A URL that came with a message is untrusted: it could point the gateway at the cluster's own
services or a cloud metadata endpoint (SSRF) and show the answer to the model. Unless
`allow_private`, the host is resolved first, every address must be public, and the request goes
to the checked address itself (the name only in `Host` and TLS SNI/verification), so a second DNS
answer cannot swap in a private one; redirects are followed by hand, each hop checked the same way.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

from yarl import URL

from wxbot_common.http_client import HttpError, TracedHttp
from wxbot_common.media.errors import MediaError
from wxbot_common.media.image import check_size

MAX_REDIRECTS = 3


class DownloadError(MediaError):
    """The URL could not be fetched: unreachable, not http(s), or an HTTP error status."""

    reason = "download"


class ForbiddenAddressError(DownloadError):
    """The URL's host is (or resolves to) a loopback, private, link-local or otherwise non-public address."""


@dataclass(frozen=True, slots=True)
class Downloaded:
    data: bytes
    content_type: str


async def download(http: TracedHttp, url: str, max_bytes: int, *, allow_private: bool = False) -> Downloaded:
    """GET `url`; `MediaTooLargeError` past `max_bytes` (declared or counted), `DownloadError` otherwise
    (`ForbiddenAddressError` for a non-public address unless `allow_private`)."""
    for _ in range(MAX_REDIRECTS + 1):
        target = _parse(url)
        request_url, headers, sni = str(target), {}, None
        if not allow_private:
            request_url = str(target.with_host(await _public_address(target)))
            headers = {"Host": target.host_port_subcomponent or ""}  # no user:password@ of the URL
            sni = target.raw_host if target.scheme == "https" else None
        try:
            async with http.request(
                "GET", request_url, headers=headers, allow_redirects=False, server_hostname=sni
            ) as resp:
                if resp.status in (301, 302, 303, 307, 308) and resp.headers.get("location"):
                    url = str(target.join(URL(resp.headers["location"])))
                    continue
                if resp.status != 200:
                    raise DownloadError(f"{_short(url)} answered HTTP {resp.status}")
                check_size(resp.content_length, max_bytes)
                buffer = bytearray()
                async for chunk in resp.content.iter_any():
                    buffer += chunk
                    check_size(len(buffer), max_bytes)
                return Downloaded(bytes(buffer), resp.headers.get("content-type", ""))
        except HttpError as exc:
            raise DownloadError(f"{_short(url)} unreachable: {exc!r}") from exc
    raise DownloadError(f"{_short(url)}: more than {MAX_REDIRECTS} redirects")


def _parse(url: str) -> URL:
    try:
        parsed = URL(url)
    except ValueError as exc:
        raise DownloadError(f"not a URL: {_short(url)!r}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.raw_host:
        raise DownloadError(f"not an http(s) URL: {_short(url)!r}")
    return parsed


async def _public_address(target: URL) -> str:
    """The first address of `target`'s host, after checking that every one of them is public."""
    host = target.raw_host or ""
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, target.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
        except OSError as exc:
            raise DownloadError(f"{host} does not resolve: {exc}") from exc
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    else:
        addresses = [literal]
    if not addresses:
        raise DownloadError(f"{host} does not resolve")
    for found in addresses:
        address = found.ipv4_mapped if isinstance(found, ipaddress.IPv6Address) and found.ipv4_mapped else found
        if not address.is_global or address.is_multicast:
            raise ForbiddenAddressError(f"{host} is a non-public address ({address}): not fetched")
    return str(addresses[0])


def _short(url: str) -> str:
    return url[:80]
