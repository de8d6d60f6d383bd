"""What a WeCom or Official Account errcode means for a reply: refresh the token, retry, or give up.

The one place that decides it, for `gettoken`/`cgi-bin/token`, `message/send`,
`message/custom/send` and `media/get` alike. Both APIs share most codes; where a code means
something else on one of them (40001: WeCom's wrong secret, the OA's stale token) that API's own
entry wins.

Giving up is kept for failures no retry can fix, of three kinds:

- configuration: a wrong secret or id, a missing permission, this server's IP not allowed — an
  operator must act (logged as an error, counted in `wxbot_gateway_config_errors_total`, shown in
  `/readyz`);
- recipient: the user does not exist for this app, or is outside the window in which the API lets
  us write to them (the OA's 48 hours);
- content: the part is empty or over the limit even after splitting.

Everything else — the token rejected again after a refresh, "busy", rate and concurrency limits,
codes that would mean a bug of ours, and any code not listed here — is retried with backoff until
the delivery consumer's last delivery and only then recorded as `ReplyFailed(retryable=true)`:
a reply is never dropped on a guess. Codes from wecom-protocol.md §3.4 and §7 and the WeCom /
Official Account global errcode pages.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


class Outcome(enum.Enum):
    REFRESH_TOKEN = "refresh_token"  # drop the token, fetch another, send again once
    RETRY = "retry"  # later, with the delivery consumer's backoff
    CONFIG = "config"  # give up: our configuration is wrong
    RECIPIENT = "recipient"  # give up: this user cannot be written to (now)
    CONTENT = "content"  # give up: this part cannot be sent as it is

    @property
    def gives_up(self) -> bool:
        return self in (Outcome.CONFIG, Outcome.RECIPIENT, Outcome.CONTENT)


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    reason: str  # for logs, ReplyFailed.error and /readyz: what it means and what to fix


def _table(entries: Mapping[int, tuple[Outcome, str]]) -> Mapping[int, Verdict]:
    return MappingProxyType({code: Verdict(outcome, reason) for code, (outcome, reason) in entries.items()})


SHARED = _table(
    {
        -1: (Outcome.RETRY, "system busy"),
        40014: (Outcome.REFRESH_TOKEN, "invalid access_token"),
        42001: (Outcome.REFRESH_TOKEN, "access_token expired"),
        40013: (Outcome.CONFIG, "invalid CorpID / AppID (WECOM_CORP_ID / WECHAT_APP_ID)"),
        48002: (Outcome.CONFIG, "API not permitted for this app: grant it in the admin console"),
        40003: (Outcome.RECIPIENT, "invalid UserID / OpenID: no such user for this app"),
        44004: (Outcome.CONTENT, "empty content"),
        45002: (Outcome.CONTENT, "content over the size limit even after splitting"),
        40004: (Outcome.CONTENT, "invalid media type"),
        40006: (Outcome.CONTENT, "invalid media size"),
        40007: (Outcome.CONTENT, "invalid media_id (expired or never uploaded)"),
        40009: (Outcome.CONTENT, "image over the size limit"),
        40011: (Outcome.CONTENT, "video over the size limit"),
        45009: (Outcome.RETRY, "API frequency limit: backing off for the window"),
        45033: (Outcome.RETRY, "API concurrency limit"),
    }
)

WECOM = _table(
    {
        40001: (Outcome.CONFIG, "WECOM_SECRET rejected: invalid secret"),
        40056: (Outcome.CONFIG, "invalid agentid: check WECOM_AGENT_ID"),
        301002: (Outcome.CONFIG, "the token belongs to another app: WECOM_AGENT_ID does not match WECOM_SECRET"),
        60020: (Outcome.CONFIG, "this server's IP is not in the app's trusted IPs (企业可信IP)"),
        81013: (Outcome.RECIPIENT, "the user is invalid or outside the app's visibility"),
        82001: (Outcome.RECIPIENT, "no valid recipient (touser, toparty and totag all invalid)"),
    }
)

OFFICIAL_ACCOUNT = _table(
    {
        40001: (Outcome.REFRESH_TOKEN, "access_token invalid or not the latest"),
        40125: (Outcome.CONFIG, "WECHAT_APP_SECRET rejected by cgi-bin/token"),
        40164: (Outcome.CONFIG, "this server's IP is not in the Official Account's IP whitelist (基本配置 → IP白名单)"),
        48001: (Outcome.CONFIG, "API unauthorized: the account lacks the customer-service message permission"),
        43004: (Outcome.RECIPIENT, "the user has unsubscribed"),
        45015: (Outcome.RECIPIENT, "outside the 48-hour window: the user has not written to the account since"),
        45047: (Outcome.RECIPIENT, "too many replies without a new message from the user"),
    }
)

BY_API: Mapping[str, Mapping[int, Verdict]] = MappingProxyType({"wecom": WECOM, "wechat": OFFICIAL_ACCOUNT})
UNKNOWN = Verdict(Outcome.RETRY, "unlisted errcode: retried until the last delivery, then recorded")


def classify(api: str, errcode: int) -> Verdict:
    """The verdict on `errcode` from `api` ("wecom" or "wechat"); unknown codes are retried."""
    return BY_API[api].get(errcode) or SHARED.get(errcode) or UNKNOWN
