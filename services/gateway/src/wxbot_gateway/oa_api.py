"""The Official Account's outbound side: its own access token and the customer-service API.

The OA shares the WeCom app's token discipline (one token per AppID in Redis, refreshed
single-flight across replicas, a stale token dropped and retried once, a rejected secret held
instead of retried) through `WeComClient` with the OA's API flavour (`cgi-bin/token`,
`cgi-bin/message/custom/send`; its errcodes are in `errcodes.OFFICIAL_ACCOUNT`). What is the
OA's own is wired here: its configuration errors — e.g. 40125 (wrong AppSecret), 40164 (this
server's IP is not whitelisted) — are reported under `wechat` in `/readyz` and
`wxbot_gateway_config_errors_total`, apart from the WeCom app's.
"""

from __future__ import annotations

from redis.asyncio import Redis

from wxbot_common.http_client import TracedHttp
from wxbot_common.ops import Readiness
from wxbot_gateway.metrics import GatewayMetrics
from wxbot_gateway.senders import WeComAppSender
from wxbot_gateway.settings import GatewaySettings
from wxbot_gateway.wecom_api import OFFICIAL_ACCOUNT, WeComClient

CHANNEL = "wechat"


def readiness_detail(settings: GatewaySettings) -> str:
    """What the OA channel can do with the variables set (shown in /readyz)."""
    receives = bool(settings.wechat_token and settings.wechat_app_id)
    replies = bool(settings.wechat_app_id and settings.wechat_app_secret)
    if receives and replies:
        return "configured"
    if receives:
        return "receiving, but replies are off: set WECHAT_APP_SECRET"
    if replies:
        return "replies configured, but callbacks are refused: set WECHAT_TOKEN"
    return "not configured: set WECHAT_* to serve an Official Account"


def official_account_client(
    settings: GatewaySettings, http: TracedHttp, redis: Redis, readiness: Readiness, metrics: GatewayMetrics
) -> WeComClient | None:
    """The OA's API client (replies, and `media/get` for voice and images), or None without an
    AppID and AppSecret."""
    readiness.set(CHANNEL, True, readiness_detail(settings))
    if not (settings.wechat_app_id and settings.wechat_app_secret):
        return None

    def config_error(errcode: int, reason: str) -> None:
        # Stays ready (callbacks are still acknowledged); the detail and the metric say what to fix.
        metrics.config_errors.labels(CHANNEL, str(errcode)).inc()
        readiness.set(CHANNEL, True, f"{reason} (errcode {errcode}): fix it")

    return WeComClient(
        http,
        redis,
        settings.wechat_api_base,
        settings.wechat_app_id,
        settings.wechat_app_secret,
        "",
        on_config_error=config_error,
        flavour=OFFICIAL_ACCOUNT,
    )


def official_account_sender(client: WeComClient) -> WeComAppSender:
    """The ReplySender for CHANNEL_OFFICIAL_ACCOUNT."""
    return WeComAppSender(client, "text", name=CHANNEL)
