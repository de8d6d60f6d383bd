"""The active configuration as the console's process sees it, secrets masked.

`make run` and a Kubernetes ConfigMap give every service the same variables, so the console's own
environment (then `.env`) is the system's configuration. Only wxbot's variables are shown (by
prefix); a value whose name says it is a credential is never shown, only whether it is set, and
a URL's password is replaced.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from dotenv import dotenv_values

PREFIXES = (
    "AIBOT_", "ANALYTICS_", "ASR_", "CONSOLE_", "CONTEXT_", "CONVERSATION_", "GATEWAY_", "HTTP_", "IMAGE_",
    "LLM_", "LOG_", "MEDIA_", "NATS_", "NLP_", "OTEL_", "REDIS_", "REMINDERS_", "SAFETY_", "SHUTDOWN_",
    "SKILLS_", "STREAM_", "TRACE_", "TTS_", "VISION_", "VOICE_", "WEATHER_", "WECHAT_", "WECOM_",
)  # fmt: skip
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|API_KEY|AES_KEY|PRIVATE|CREDENTIAL|_KEY$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    value: str
    masked: bool
    source: str  # "environment" or ".env"


def mask(name: str, value: str) -> tuple[str, bool]:
    """What may be shown of `value`, and whether anything was hidden."""
    if SECRET_NAME.search(name):
        return ("(set, hidden)" if value else "(empty)"), bool(value)
    if "://" in value and "@" in value:
        shown = []
        for item in value.split(","):
            parts = urlsplit(item.strip())
            if parts.password:
                netloc = f"{parts.username or ''}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
                shown.append(urlunsplit(parts._replace(netloc=netloc)))
            else:
                shown.append(item)
        joined = ",".join(shown)
        return joined, joined != value
    return value, False


def active_settings(environ: Mapping[str, str] | None = None, env_file: Path = Path(".env")) -> list[Setting]:
    environ = os.environ if environ is None else environ
    from_file = {k: v for k, v in dotenv_values(env_file).items() if v is not None} if env_file.is_file() else {}
    names = sorted({n for n in (*environ, *from_file) if n.upper().startswith(PREFIXES)})
    out = []
    for name in names:
        source = "environment" if name in environ else ".env"
        value, masked = mask(name, environ.get(name, from_file.get(name, "")))
        out.append(Setting(name, value, masked, source))
    return out
