"""Settings of the gateway (environment variables, then `.env`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from wxbot_common.media.settings import MediaSettings


class GatewaySettings(MediaSettings):
    gateway_host: str = Field("127.0.0.1", description="HTTP listener address (0.0.0.0 in containers)")
    gateway_port: int = Field(8080, description="HTTP port: callbacks, /healthz, /readyz, /metrics")
    gateway_role: Literal["all", "ingress", "delivery"] = Field(
        "all",
        description="all: callbacks and reply delivery; ingress: callbacks only; delivery: sends replies only "
        "(run the two as separate processes so a burst of sends never delays a callback's answer)",
    )
    wecom_corp_id: str = Field("", description="CorpID (ww…): the receive id of the callback crypto")
    wecom_agent_id: str = Field("", description="AgentID of the self-built app")
    wecom_secret: str = Field("", description="Secret of the app, for gettoken")
    wecom_token: str = Field("", description="callback Token (signature)")
    wecom_encoding_aes_key: str = Field("", description="callback EncodingAESKey (43 characters)")
    wecom_api_base: str = Field("https://qyapi.weixin.qq.com", description="WeCom API base URL")
    wecom_timeout_s: float = Field(10.0, description="timeout of one WeCom API call")
    wecom_max_connections: int = Field(32, description="HTTP connections to the WeCom API per gateway replica")
    gateway_max_body_bytes: int = Field(
        64 * 1024, description="larger callback bodies get 413; larger bridge frames close the socket (1009)"
    )
    gateway_body_timeout_s: float = Field(
        10.0, description="a callback body that has not arrived whole this long after its headers gets 408"
    )
    wecom_timestamp_window_s: int = Field(
        600,
        description="POST callbacks whose timestamp is further than this from now get 403 (0 = off); "
        "WeCom retries with the original timestamp within ~20 s, so keep it well above that",
    )
    wecom_reply_format: Literal["text", "markdown"] = Field(
        "text", description="message type of replies in the self-built app: text or markdown"
    )
    feedback: Literal["off", "sampled", "always"] = Field(
        "off", description="a 👍/👎 card under LLM answers in the WeCom app: never, for a sample, or always"
    )
    feedback_sample_rate: float = Field(0.1, ge=0, le=1, description="share of LLM answers asked with FEEDBACK=sampled")
    feedback_ttl_s: int = Field(
        72 * 3600, gt=0, description="how long a card's buttons count (WeCom's response codes last 72 hours)"
    )
    gateway_dedup_ttl_s: int = Field(
        86400, description="how long a callback's MsgId is remembered, so a late retry is not a new message"
    )
    gateway_retry_base_s: float = Field(
        2.0,
        description="first delay before a failed send is retried (busy, rate limit, unreachable); doubles, jittered",
    )
    gateway_retry_max_s: float = Field(
        5.0, gt=0, description="longest pause between two tries of a send while its delivery holds the reply"
    )
    gateway_delivery_hold_s: float = Field(
        60.0,
        ge=0,
        description="how long a delivery keeps retrying a failing send itself (the reply keeps its place in its "
        "conversation, and an outage that ends is noticed within GATEWAY_RETRY_MAX_S) before handing it back "
        "to JetStream for a later delivery; 0 = hand back at once",
    )
    conversation_group_scope: Literal["group", "member"] = Field(
        "group", description="group chats: one memory per group, or one per member"
    )
    gateway_bridge_token: str = Field(
        "", description="bearer token required by /ws/bridge; empty = the bridge refuses every client"
    )
    wechat_app_id: str = Field("", description="Official Account AppID (wx…): the receive id in safe mode")
    wechat_app_secret: str = Field("", description="Official Account AppSecret, for /cgi-bin/token")
    wechat_token: str = Field("", description="Official Account server Token (signature)")
    wechat_encoding_aes_key: str = Field("", description="Official Account EncodingAESKey (safe/compat mode)")
    wechat_api_base: str = Field("https://api.weixin.qq.com", description="Official Account API base URL")
    voice_deadline_s: float = Field(
        4.0,
        gt=0,
        description="time for a WeCom voice message's download, conversion and transcription; the callback is "
        "answered after it (WeCom retries after 5 s), and a voice not transcribed by then gets a notice",
    )
    voice_max_bytes: int = Field(2 * 1024 * 1024, description="larger voice files are not transcribed (a notice)")
    image_in_deadline_s: float = Field(
        4.0,
        gt=0,
        description="time to fetch, convert and store an image message's picture; the callback is answered after "
        "it (WeCom retries after 5 s), and an image not stored by then gets a notice",
    )
    image_in_max_bytes: int = Field(
        10 * 1024 * 1024,
        gt=0,
        description="larger inbound images are not downloaded (refused by Content-Length, else counted): a notice",
    )
    image_in_allow_private: bool = Field(
        False,
        description="fetch image URLs that resolve to loopback/private/link-local addresses (a bridge on your LAN, "
        "tests); off, such URLs are refused (SSRF) and the user gets the image notice",
    )
    aibot_token: str = Field("", description="WeCom AI bot callback Token")
    aibot_encoding_aes_key: str = Field("", description="WeCom AI bot callback EncodingAESKey")

    @property
    def wecom_configured(self) -> bool:
        return all((self.wecom_corp_id, self.wecom_token, self.wecom_encoding_aes_key))
