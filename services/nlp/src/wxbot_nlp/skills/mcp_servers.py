"""SKILLS_MCP_SERVERS: which MCP servers to bridge (parsed without loading the `mcp` SDK)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

SERVER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class McpServer:
    """One entry of SKILLS_MCP_SERVERS."""

    name: str  # the tools' service name: in SKILLS_ALLOW/DENY, logs and spans
    url: str

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def address(self) -> str:
        """host:port, for logs (the URL may carry credentials)."""
        return f"{self.host}:{self.port}"


def parse_servers(raw: str) -> list[McpServer]:
    """`maps=http://127.0.0.1:8931/mcp,files=https://mcp.example.com/mcp` → the servers, in order;
    ValueError naming SKILLS_MCP_SERVERS when an entry is not `name=url`."""
    servers: list[McpServer] = []
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        name, sep, url = (p.strip() for p in entry.partition("="))
        if not sep or not SERVER_NAME.match(name):
            raise ValueError(
                f"SKILLS_MCP_SERVERS: {entry!r} is not name=url (a name of 1-64 A-Z a-z 0-9 _ -, then the "
                "server's streamable HTTP URL)"
            )
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"SKILLS_MCP_SERVERS: the URL of {name} is not an http(s) URL: {url!r}")
        if any(s.name == name for s in servers):
            raise ValueError(f"SKILLS_MCP_SERVERS: the name {name} is used twice")
        servers.append(McpServer(name, url))
    return servers
