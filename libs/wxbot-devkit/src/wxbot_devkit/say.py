"""`python -m wxbot_devkit.say 'hello'`: talk to a running wxbot as WeCom would.

Encrypts a text callback with the stack's WeCom settings (from `.run/stack.env`, written by
`make run`, then `.env`), posts it to the gateway and, when the WeCom API is the local fake,
waits for the reply that the bot sends and prints it.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import httpx
from dotenv import dotenv_values

from wxbot_wecom.crypto import CallbackCrypto
from wxbot_wecom.messages import build_inner_text_xml

REQUIRED = ("WECOM_CORP_ID", "WECOM_AGENT_ID", "WECOM_TOKEN", "WECOM_ENCODING_AES_KEY")


def load_settings(run_dir: Path) -> dict[str, str]:
    """The stack's view of the settings: what `make run` wrote wins over `.env`."""
    merged: dict[str, str] = {}
    for path in (Path(".env"), run_dir / "stack.env"):
        merged.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    return merged


def post_text(settings: dict[str, str], user: str, text: str, timeout_s: float) -> tuple[int, int]:
    """POST one encrypted text callback; (HTTP status, MsgId)."""
    corp_id, agent_id = settings["WECOM_CORP_ID"], settings["WECOM_AGENT_ID"]
    crypto = CallbackCrypto(settings["WECOM_TOKEN"], settings["WECOM_ENCODING_AES_KEY"], corp_id)
    now = int(time.time())
    msg_id = random.randrange(10**18, 10**19)
    inner = build_inner_text_xml(
        to_user=corp_id, from_user=user, create_time=now, content=text, msg_id=str(msg_id), agent_id=agent_id
    )
    params, body = crypto.build_callback(
        inner, timestamp=str(now), nonce=str(msg_id % 10**9), to_user_name=corp_id, agent_id=agent_id
    )
    url = settings.get("GATEWAY_URL", "http://127.0.0.1:8080") + "/wecom/callback"
    resp = httpx.post(
        url, params=params, content=body.encode(), headers={"Content-Type": "text/xml"}, timeout=timeout_s
    )
    return resp.status_code, msg_id


def wait_reply(api_base: str, user: str, seen: int, timeout_s: float) -> list[str]:
    """Poll the fake WeCom's record of sent messages until one more arrives for `user`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msgs = httpx.get(f"{api_base}/_fake/messages", params={"touser": user}, timeout=5).json()["messages"]
        if len(msgs) > seen:
            return [_shown(m) for m in msgs[seen:]]
        time.sleep(0.2)  # a polling interval of a CLI, bounded by the deadline
    return []


def _shown(message: dict[str, object]) -> str:
    """A text reply as it is; an image or voice reply as its kind and media id (the fake keeps the file)."""
    kind = message.get("msgtype", "text")
    if kind == "text":
        return str(message.get("content", ""))
    return f"[{kind} message, media_id {message.get('media_id', '')}]"


def count_sent(api_base: str, user: str) -> int | None:
    """How many messages the fake WeCom holds for `user`; None when the API is not the fake."""
    try:
        resp = httpx.get(f"{api_base}/_fake/messages", params={"touser": user}, timeout=5)
    except httpx.HTTPError:
        return None
    return len(resp.json()["messages"]) if resp.status_code == 200 else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="wxbot-say", description=__doc__)
    parser.add_argument("text", help="what the user says")
    parser.add_argument("--user", default="demo-user", help="the WeCom UserID that speaks")
    parser.add_argument("--run-dir", default=".run", help="the folder `make run` uses")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the reply")
    args = parser.parse_args(argv)
    settings = load_settings(Path(args.run_dir))
    missing = [
        k for k in ("WECOM_CORP_ID", "WECOM_AGENT_ID", "WECOM_TOKEN", "WECOM_ENCODING_AES_KEY") if not settings.get(k)
    ]
    if missing:
        sys.exit(f"missing settings {', '.join(missing)}: start the stack with `make run` or `make demo` first")
    api_base = settings.get("WECOM_API_BASE", "").rstrip("/")
    before = count_sent(api_base, args.user) if api_base else None
    status, msg_id = post_text(settings, args.user, args.text, args.timeout)
    print(f"callback MsgId {msg_id}: HTTP {status}")
    if status != 200:
        sys.exit(1)
    if before is None:
        print("the WeCom API is not the local fake: the reply goes to the real WeCom")
        return
    replies = wait_reply(api_base, args.user, before, args.timeout)
    if not replies:
        sys.exit(f"no reply within {args.timeout:.0f} s")
    for reply in replies:
        print(f"bot → {args.user}: {reply}")


if __name__ == "__main__":
    main()
