"""Settings of the console (environment variables, then `.env`)."""

from __future__ import annotations

from pydantic import Field

from wxbot_common.settings import CommonSettings


class ConsoleSettings(CommonSettings):
    console_host: str = Field("127.0.0.1", description="listen address of the console (0.0.0.0 in containers)")
    console_port: int = Field(8090, description="HTTP port: the pages, /healthz, /readyz, /metrics")
    console_public_url: str = Field(
        "", description="the console's address as browsers reach it (redirect_uri of the login); default from host/port"
    )
    console_admins: str = Field("", description="comma-separated WeCom UserIDs allowed in; nobody else gets in")
    console_secret_key: str = Field(
        "",
        description="key that signs cookies (32+ characters); empty = a random one per process (logins end on restart)",
    )
    console_session_ttl_s: int = Field(8 * 3600, ge=60, description="a login lasts this long")
    console_local_login_token: str = Field(
        "", description="one-time local login token (make run sets it when WeCom is not configured)"
    )
    console_max_upload_bytes: int = Field(
        256 * 1024, gt=0, description="largest knowledge-base or lexicon file (and any request body) accepted"
    )
    console_kb_files: str = Field("", description="knowledge-base files editable here (default: NLP_KB_FILES)")
    console_lexicon_files: str = Field("", description="lexicon files editable here (default: SAFETY_WORDLIST_FILES)")
    console_services: str = Field(
        "", description="name=url pairs of the services whose /readyz and /metrics the dashboard reads"
    )
    console_sample_s: float = Field(5.0, gt=0, description="how often the dashboard samples the services' metrics")
    nlp_kb_files: str = Field("", description="read for CONSOLE_KB_FILES' default")
    safety_wordlist_files: str = Field("", description="read for CONSOLE_LEXICON_FILES' default")
    analytics_url: str = Field("", description="base URL of the analytics service's JSON API (empty: not configured)")
    gateway_url: str = Field("http://127.0.0.1:8080", description="the gateway, whose /ws/bridge the playground uses")
    gateway_bridge_token: str = Field("", description="bearer token of the gateway's WebSocket bridge")
    wecom_corp_id: str = Field("", description="CorpID: `appid` of the web login")
    wecom_agent_id: str = Field("", description="AgentID of the self-built app")
    wecom_secret: str = Field("", description="Secret of the app, for gettoken")
    wecom_api_base: str = Field("https://qyapi.weixin.qq.com", description="WeCom API base URL")
    wecom_login_base: str = Field("https://login.work.weixin.qq.com", description="WeCom web login base URL")

    @property
    def admins(self) -> frozenset[str]:
        return frozenset(a.strip() for a in self.console_admins.split(",") if a.strip())

    @property
    def wecom_login_configured(self) -> bool:
        return bool(self.wecom_corp_id and self.wecom_agent_id and self.wecom_secret)

    @property
    def public_url(self) -> str:
        if self.console_public_url:
            return self.console_public_url.rstrip("/")
        host = "127.0.0.1" if self.console_host in ("0.0.0.0", "") else self.console_host
        return f"http://{host}:{self.console_port}"

    @property
    def kb_files(self) -> list[str]:
        return _paths(self.console_kb_files or self.nlp_kb_files)

    @property
    def lexicon_files(self) -> list[str]:
        return _paths(self.console_lexicon_files or self.safety_wordlist_files)

    @property
    def services(self) -> dict[str, str]:
        pairs = (p.partition("=") for p in self.console_services.split(",") if "=" in p)
        return {name.strip(): url.strip().rstrip("/") for name, _, url in pairs if name.strip() and url.strip()}


def _paths(value: str) -> list[str]:
    return [p.strip() for p in value.split(",") if p.strip()]
