"""`make run` / `make demo`: the whole system in the foreground until Ctrl-C or SIGTERM.

Supervised as Kubernetes would run it: a process that dies is restarted (see `supervisor`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

from wxbot_devkit.system import Stack, StackConfig

# Demo credentials for the fake WeCom (the protocol document's test configuration).
DEMO_WECOM = {
    "WECOM_CORP_ID": "ww0123456789abcdef",
    "WECOM_AGENT_ID": "1000002",
    "WECOM_SECRET": "demo-secret",
    "WECOM_TOKEN": "GatewayTestToken2024",
    "WECOM_ENCODING_AES_KEY": "26kD8iXhY7SDqeoaZPZDJRZuf3NgJfcC3M9TTHSPjos",
}


async def _serve(args: argparse.Namespace, run_dir: Path) -> None:
    env = {k: v for k, v in dotenv_values(".env").items() if v is not None}
    fakes: list[object] = []
    if args.with_fakes:
        from wxbot_devkit.fakes.llm import FakeLLM
        from wxbot_devkit.fakes.weather import FakeOpenMeteo
        from wxbot_devkit.fakes.wecom import FakeWeCom

        wecom = FakeWeCom(
            DEMO_WECOM["WECOM_CORP_ID"], DEMO_WECOM["WECOM_SECRET"], agent_id=int(DEMO_WECOM["WECOM_AGENT_ID"])
        )
        llm = FakeLLM(latency_s=args.fake_llm_latency)
        weather = FakeOpenMeteo()
        await wecom.start()
        await llm.start()
        await weather.start()
        fakes = [llm, wecom, weather]
        env.update({**DEMO_WECOM, "WECOM_API_BASE": wecom.base_url, "LLM_BASE_URL": f"{llm.base_url}/v1"})
        env["IMAGE_IN_ALLOW_PRIVATE"] = "true"  # the fake WeCom's picture URLs are on loopback
        # The weather skill (services/skills) asks the fake Open-Meteo: both APIs on one server.
        env.update({"WEATHER_GEOCODING_URL": weather.base_url, "WEATHER_FORECAST_URL": weather.base_url})
        # The console's login goes through the fake WeCom's web login page (members 张三, 李四, 王五).
        env.update({"WECOM_LOGIN_BASE": wecom.base_url, "CONSOLE_ADMINS": env.get("CONSOLE_ADMINS") or DEMO_ADMIN})
    env.update(local_login_env({**os.environ, **env}))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    config = StackConfig(
        run_dir=run_dir, ports="default", extra_env=env, persist=True, echo=sys.stdout, supervise=True, console=True
    )
    try:
        async with Stack(config) as stack:
            _write_stack_env(stack, run_dir / "stack.env")
            print(_banner(stack, args.with_fakes, fakes), flush=True)
            await stop.wait()
            restarts = len(stack.supervisor.history)
            print(f"stopping… ({restarts} restart(s) while running)", flush=True)
    finally:
        for fake in fakes:
            with contextlib.suppress(Exception):
                await fake.stop()  # type: ignore[attr-defined]


DEMO_ADMIN = "zhangsan"
CONSOLE_LOGIN_NEEDED = ("WECOM_CORP_ID", "WECOM_AGENT_ID", "WECOM_SECRET")


def local_login_env(env: Mapping[str, str]) -> dict[str, str]:
    """Without a WeCom app to log in with, a one-time local login link (printed in the banner)."""
    if all(env.get(v) for v in CONSOLE_LOGIN_NEEDED):
        return {}
    return {"CONSOLE_LOCAL_LOGIN_TOKEN": secrets.token_urlsafe(24)}


def _console_lines(stack: Stack, env: dict[str, str]) -> list[str]:
    """Where the console is and how to get in."""
    url = stack.console_url
    if url is None:
        return []
    lines = [f"  Console              {url}/   (playground {url}/playground)"]
    if env.get("CONSOLE_LOCAL_LOGIN_TOKEN"):
        lines.append(f"  Console login        {url}/login/local?token={env['CONSOLE_LOCAL_LOGIN_TOKEN']}  (works once)")
    else:
        admins = env.get("CONSOLE_ADMINS") or "nobody: set CONSOLE_ADMINS"
        lines.append(f"  Console login        WeCom web login; admins: {admins}")
    return lines


SAY_KEYS = ("WECOM_CORP_ID", "WECOM_AGENT_ID", "WECOM_TOKEN", "WECOM_ENCODING_AES_KEY", "WECOM_API_BASE")


def _write_stack_env(stack: Stack, path: Path) -> None:
    """What `wxbot_devkit.say` needs to talk to this stack (owner-only: it holds the callback key)."""
    env = stack.env | stack.config.extra_env
    lines = [f"GATEWAY_URL={stack.gateway_url}"] + [f"{k}={env[k]}" for k in SAY_KEYS if env.get(k)]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


WECOM_NEEDED = ("WECOM_CORP_ID", "WECOM_AGENT_ID", "WECOM_SECRET", "WECOM_TOKEN", "WECOM_ENCODING_AES_KEY")


def _wecom_state(env: dict[str, str]) -> str:
    """What the banner says of WeCom: a `.env` with one variable misspelt must not read as configured."""
    missing = [v for v in WECOM_NEEDED if not env.get(v)]
    if len(missing) == len(WECOM_NEEDED):
        return "NOT configured: set WECOM_* in .env (see README)"
    return "configured" if not missing else "NOT configured, missing: " + ", ".join(missing)


def _banner(stack: Stack, with_fakes: bool, fakes: list[object]) -> str:
    env = stack.env | stack.config.extra_env
    lines = ["", "=" * 72, "wxbot is ready", ""]
    lines.append(f"  WeCom callback URL   {stack.gateway_url}/wecom/callback")
    for service, urls in stack.service_urls().items():
        lines.append(f"  {service:<20} {urls[0]}/healthz  /readyz  /metrics")
    lines.append(f"  NATS                 {stack.nats.url}   (data in {stack.nats.store_dir})")
    lines.append(f"  Redis                {stack.redis.url}")
    wecom = "fake WeCom at " + env.get("WECOM_API_BASE", "") if with_fakes else _wecom_state(env)
    llm = env.get("LLM_BASE_URL") or "none: answers say that no LLM is configured (set LLM_BASE_URL)"
    weather = env.get("WEATHER_FORECAST_URL") or "the public Open-Meteo API"
    if with_fakes:
        weather = f"fake Open-Meteo at {weather}"
    lines += ["", f"  WeCom                {wecom}", f"  LLM                  {llm}"]
    lines += [f"  Weather (skill)      {weather}"]
    lines += ["", *_console_lines(stack, env)]
    lines += ["", "  Send a message:      .venv/bin/python -m wxbot_devkit.say 'hello'"]
    if "analytics" in stack.service_urls():
        lines += [f"  Analytics report:    {stack.service_urls()['analytics'][0]}/v1/report?since=24h"]
        lines += ["                       .venv/bin/python -m wxbot_analytics report --since 24h"]
    lines += [f"  {note}" for note in stack.notes]
    wait = stack.config.backoff
    lines += ["", f"A process that dies is restarted after {wait.initial_s:g} s ({wait.max_s:g} s in a crash loop)."]
    lines += ["Ctrl-C stops everything.", "=" * 72, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="wxbot-stack", description=__doc__)
    parser.add_argument("--with-fakes", action="store_true", help="also run a fake WeCom API, LLM and weather API")
    parser.add_argument("--fake-llm-latency", type=float, default=0.3, help="seconds the fake LLM takes")
    parser.add_argument("--run-dir", default=".run", help="where NATS and Redis keep their data")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args, Path(args.run_dir).resolve()))
    print("stopped", flush=True)
