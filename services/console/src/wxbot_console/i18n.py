"""The console's words in Chinese and English; the language comes from `?lang=`, then a cookie,
then the browser's Accept-Language (Chinese first: the bot's users are)."""

from __future__ import annotations

from starlette.requests import Request

LANGS = ("zh", "en")
LANG_COOKIE = "wxbot_console_lang"

TEXT: dict[str, tuple[str, str]] = {
    "title": ("wxbot 控制台", "wxbot console"),
    "dashboard": ("仪表盘", "Dashboard"),
    "playground": ("试聊", "Playground"),
    "operations": ("运维", "Operations"),
    "config": ("配置", "Configuration"),
    "logout": ("退出登录", "Log out"),
    "login": ("登录", "Log in"),
    "login_wecom": ("使用企业微信登录", "Log in with WeCom"),
    "login_local": (
        "未配置企业微信：请使用 make run 终端中打印的一次性本地登录链接。",
        "WeCom is not configured: use the one-time local login link that make run printed in its terminal.",
    ),
    "refused": ("拒绝访问", "Access refused"),
    "not_admin": (
        "您不是此控制台的管理员（CONSOLE_ADMINS）。",
        "You are not an admin of this console (CONSOLE_ADMINS).",
    ),
    "bad_state": (
        "登录请求无效或已被使用（state 校验失败），请重新登录。",
        "The login request is invalid or was already used (state check failed): log in again.",
    ),
    "no_code": ("企业微信未返回授权码（登录被取消？）。", "WeCom returned no code (was the login cancelled?)."),
    "bad_token": ("本地登录链接无效或已被使用。", "The local login link is invalid or was already used."),
    "csrf": (
        "请求缺少有效的 CSRF 令牌，请刷新页面后重试。",
        "The request lacks a valid CSRF token: reload the page and retry.",
    ),
    "need_login": ("请先登录。", "Please log in first."),
    "health": ("服务健康", "Service health"),
    "traffic": ("流量（条/秒）", "Traffic (messages/s)"),
    "latency": ("各阶段延迟（毫秒）", "Latency per stage (ms)"),
    "tokens": ("LLM 令牌（个/秒）", "LLM tokens (per s)"),
    "sources": ("回答来源（累计）", "Answer sources (total)"),
    "safety": ("安全拦截（累计）", "Safety blocks (total)"),
    "lag": ("消费者积压", "Consumer lag"),
    "analytics": ("分析", "Analytics"),
    "analytics_off": ("分析服务未配置（ANALYTICS_URL）。", "analytics not configured (ANALYTICS_URL)."),
    "ab": ("A/B 报告", "A/B report"),
    "summary": ("概况", "Summary"),
    "models": ("模型用量与费用", "Models: tokens and cost"),
    "service": ("服务", "Service"),
    "state": ("状态", "State"),
    "ready": ("就绪", "ready"),
    "not_ready": ("未就绪", "not ready"),
    "no_data": ("暂无数据", "no data yet"),
    "send": ("发送", "Send"),
    "image": ("图片（可选，文字作为说明）", "Image (optional; the text is its caption)"),
    "image_too_big": ("图片太大，最多可发送", "The image is too large; the most one message takes is"),
    "voice": ("语音（可选，上传音频文件，将被识别为文字）", "Voice (optional; an audio file, transcribed)"),
    "voice_too_big": ("语音太大，最多可发送", "The voice message is too large; the most one message takes is"),
    "voice_item": ("语音消息", "Voice message"),
    "message": ("消息", "Message"),
    "you": ("我", "You"),
    "bot": ("机器人", "Bot"),
    "reset_hint": ("输入 /reset 清除对话记忆。", "Type /reset to forget the conversation."),
    "connecting": ("连接中…", "connecting…"),
    "connected": ("已连接", "connected"),
    "disconnected": ("连接已断开", "disconnected"),
    "dead_letters": ("死信", "Dead letters"),
    "no_dead_letters": ("没有死信。", "No dead letters."),
    "replay": ("重放", "Replay"),
    "discard": ("丢弃", "Discard"),
    "consumer": ("消费者", "Consumer"),
    "subject": ("主题", "Subject"),
    "reason": ("原因", "Reason"),
    "reset_conversation": ("重置用户对话", "Reset a user's conversation"),
    "conversation_id": ("对话 ID", "Conversation id"),
    "reset": ("重置", "Reset"),
    "files": ("知识库与词库", "Knowledge base and lexicon"),
    "no_files": (
        "未配置可编辑的文件（NLP_KB_FILES / SAFETY_WORDLIST_FILES）。",
        "No editable files configured (NLP_KB_FILES / SAFETY_WORDLIST_FILES).",
    ),
    "edit": ("编辑", "Edit"),
    "save": ("保存", "Save"),
    "audit": ("操作记录", "Admin actions"),
    "who": ("操作人", "Who"),
    "action": ("操作", "Action"),
    "target": ("对象", "Target"),
    "when": ("时间", "When"),
    "name": ("名称", "Name"),
    "value": ("值", "Value"),
    "source": ("来源", "Source"),
    "done": ("已完成", "Done"),
    "logged_in_as": ("已登录：", "Logged in as "),
    "language": ("English", "中文"),
    "skip": ("跳到正文", "Skip to content"),
}


def language(request: Request) -> str:
    wanted = request.query_params.get("lang") or request.cookies.get(LANG_COOKIE, "")
    if wanted in LANGS:
        return wanted
    accept = request.headers.get("accept-language", "").lower()
    return "en" if accept.startswith("en") else "zh"


def translator(lang: str) -> dict[str, str]:
    index = LANGS.index(lang) if lang in LANGS else 0
    return {key: pair[index] for key, pair in TEXT.items()}
