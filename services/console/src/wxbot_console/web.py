"""The console's HTTP routes: login, pages, the playground socket and the operations.

Pages need a live admin session (else: to /login); every POST also needs the session's CSRF
token; the WebSocket needs the session and an Origin of this console. Refusals are plain pages
with the reason and a 4xx status, and change nothing.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from wxbot_common.errors import TransientError
from wxbot_common.ids import now_timestamp
from wxbot_common.logs import get_logger
from wxbot_common.nats.publisher import EventPublisher
from wxbot_console.analytics import AnalyticsClient
from wxbot_console.audit import AuditLog
from wxbot_console.config_view import active_settings
from wxbot_console.deadletters import DeadLetters, NoSuchDeadLetterError
from wxbot_console.editable_files import EditableFile, EditableFiles, InvalidFileError
from wxbot_console.i18n import LANG_COOKIE, LANGS, language, translator
from wxbot_console.playground import MAX_IMAGE_BYTES, Playground
from wxbot_console.sampler import MetricsSampler
from wxbot_console.security import same_origin
from wxbot_console.sessions import SESSION_COOKIE, STATE_COOKIE, STATE_TTL_S, Session, SessionStore
from wxbot_console.settings import ConsoleSettings
from wxbot_console.wecom_login import LoginFailedError, WeComLogin
from wxbot_proto.events.v1 import events_pb2 as ev

LOCAL_OPERATOR = "local"
MAX_CONVERSATION_ID = 300


@dataclass
class Console:
    settings: ConsoleSettings
    sessions: SessionStore
    wecom: WeComLogin | None
    playground: Playground
    dead_letters: DeadLetters
    audit: AuditLog
    files: EditableFiles
    sampler: MetricsSampler
    analytics: AnalyticsClient
    publisher: EventPublisher


def templates() -> Environment:
    folder = Path(str(resources.files("wxbot_console").joinpath("templates")))
    return Environment(loader=FileSystemLoader(folder), autoescape=select_autoescape(default=True))


def console_routes(console: Console) -> list[BaseRoute]:
    env = templates()
    log = get_logger("wxbot.console")
    settings = console.settings
    secure = settings.public_url.startswith("https://")

    def render(
        request: Request, name: str, page: str, session: Session | None, status: int = 200, **ctx: Any
    ) -> Response:
        lang = language(request)
        body = env.get_template(name).render(
            t=translator(lang), lang=lang, page=page, user=session.user if session else "",
            csrf=session.csrf if session else "", **ctx,
        )  # fmt: skip
        response = HTMLResponse(body, status_code=status)
        if request.query_params.get("lang") in LANGS:
            response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, httponly=True, samesite="lax", secure=secure)
        return response

    def refuse(
        request: Request, key: str, status: int, session: Session | None = None, message: str | None = None
    ) -> Response:
        t = translator(language(request))
        return render(
            request, "message.html", "refused", session, status, heading=t["refused"], message=message or t[key]
        )

    async def admin(conn: HTTPConnection) -> Session | None:
        found = await console.sessions.load(conn.cookies.get(SESSION_COOKIE))
        return found if found is not None and _is_admin(found.user, settings) else None

    def file_of(request: Request) -> EditableFile | None:
        index = _int(request.path_params["index"])
        return console.files.find(request.path_params["kind"], -1 if index is None else index)

    async def change(request: Request) -> tuple[Session | None, Response | None, Any]:
        """The session and form of a POST, or the refusal (no session: 401; bad CSRF: 403)."""
        session = await admin(request)
        if session is None:
            return None, refuse(request, "need_login", 401), None
        form = await request.form(max_files=0, max_fields=8)
        if not session.csrf_ok(str(form.get("csrf", "")) or request.headers.get("x-csrf-token")):
            log.warning("csrf_refused", user=session.user, path=request.url.path)
            return None, refuse(request, "csrf", 403, session), None
        return session, None, form

    # -- login ---------------------------------------------------------------------------------

    async def login_page(request: Request) -> Response:
        return render(request, "login.html", "login", None, wecom=console.wecom is not None)

    async def login_wecom(request: Request) -> Response:
        if console.wecom is None:
            return refuse(request, "login_local", 404)
        state, cookie = await console.sessions.new_state()
        lang = language(request)
        target = console.wecom.authorize_url(f"{settings.public_url}/login/callback", state, lang)
        response = RedirectResponse(target, status_code=302)
        response.set_cookie(
            STATE_COOKIE, cookie, max_age=STATE_TTL_S, httponly=True, samesite="lax", secure=secure, path="/login"
        )
        return response

    async def login_callback(request: Request) -> Response:
        if console.wecom is None:
            return refuse(request, "login_local", 404)
        state, code = request.query_params.get("state"), request.query_params.get("code", "")
        if not await console.sessions.take_state(state, request.cookies.get(STATE_COOKIE)):
            log.warning("login_refused", reason="bad_state")
            return refuse(request, "bad_state", 400)
        if not code:
            return refuse(request, "no_code", 400)
        try:
            userid = await console.wecom.member_of(code)
        except LoginFailedError as exc:
            log.warning("login_refused", reason="code", error=str(exc))
            return refuse(request, "refused", 403, message=str(exc))
        if userid not in settings.admins:
            log.warning("login_refused", reason="not_admin", user=userid)
            return refuse(request, "not_admin", 403)
        return await _logged_in(request, userid, "wecom")

    async def login_local(request: Request) -> Response:
        given = request.query_params.get("token", "")
        expected = settings.console_local_login_token
        if not (expected and given and hmac.compare_digest(given.encode(), expected.encode())):
            return refuse(request, "bad_token", 403)
        if not await console.sessions.spend_local_token(given):
            return refuse(request, "bad_token", 403)
        return await _logged_in(request, LOCAL_OPERATOR, "local")

    async def _logged_in(request: Request, user: str, how: str) -> Response:
        _, cookie = await console.sessions.create(user)
        log.info("login", user=user, via=how)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            SESSION_COOKIE, cookie, max_age=settings.console_session_ttl_s, httponly=True, samesite="lax", secure=secure
        )
        response.delete_cookie(STATE_COOKIE, path="/login")
        return response

    async def logout(request: Request) -> Response:
        session, refused, _ = await change(request)
        if refused is not None:
            return refused
        assert session is not None
        await console.sessions.end(session)
        log.info("logout", user=session.user)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    # -- pages ---------------------------------------------------------------------------------

    async def dashboard(request: Request) -> Response:
        session = await admin(request)
        if session is None:
            return RedirectResponse("/login", status_code=303)
        t = translator(language(request))
        labels = {
            k: t[k]
            for k in ("ready", "not_ready", "no_data", "ab", "summary", "latency", "models", "sources", "safety")
        }
        return render(
            request, "dashboard.html", "dashboard", session, analytics=console.analytics.configured, labels=labels
        )

    async def dashboard_data(request: Request) -> Response:
        if await admin(request) is None:
            return JSONResponse({"error": "log in first"}, status_code=401)
        return JSONResponse(
            {
                "health": [asdict(h) for h in console.sampler.health.values()],
                "series": console.sampler.series(),
                "analytics": await console.analytics.report(),
            }
        )

    async def playground_page(request: Request) -> Response:
        session = await admin(request)
        if session is None:
            return RedirectResponse("/login", status_code=303)
        return render(request, "playground.html", "playground", session, max_image_bytes=MAX_IMAGE_BYTES)

    async def playground_socket(websocket: WebSocket) -> None:
        session = await admin(websocket)
        if session is None or not same_origin(websocket, settings.public_url):
            await websocket.close(code=1008)  # before accept: the handshake gets HTTP 403
            return
        await websocket.accept()
        await console.playground.relay(websocket, session.user)

    async def config_page(request: Request) -> Response:
        session = await admin(request)
        if session is None:
            return RedirectResponse("/login", status_code=303)
        return render(request, "config.html", "config", session, settings=active_settings())

    # -- operations ----------------------------------------------------------------------------

    async def operations(
        request: Request, session: Session | None = None, notice: str = "", status: int = 200
    ) -> Response:
        session = session or await admin(request)
        if session is None:
            return RedirectResponse("/login", status_code=303)
        try:
            letters = await console.dead_letters.list()
        except TransientError as exc:
            letters, notice = [], str(exc)
        return render(
            request, "operations.html", "operations", session, status, notice=notice, dead_letters=letters,
            files=console.files.files, audit=await console.audit.recent(),
        )  # fmt: skip

    async def operations_page(request: Request) -> Response:
        notice = translator(language(request))["done"] if request.query_params.get("done") else ""
        return await operations(request, notice=notice)

    async def dead_letter_action(request: Request) -> Response:
        session, refused, _ = await change(request)
        if refused is not None:
            return refused
        assert session is not None
        seq, verb = _int(request.path_params["seq"]), request.path_params["verb"]
        if seq is None or verb not in ("replay", "discard"):
            return await operations(request, session, "no such dead letter or action", 404)
        try:
            letter = await (console.dead_letters.replay(seq) if verb == "replay" else console.dead_letters.discard(seq))
        except NoSuchDeadLetterError as exc:
            return await operations(request, session, str(exc), 404)
        except TransientError as exc:
            return await operations(request, session, str(exc), 503)
        await console.audit.record(session.user, f"dead_letter.{verb}", str(seq), f"{letter.subject}: {letter.reason}")
        return RedirectResponse("/operations?done=1", status_code=303)

    async def reset_conversation(request: Request) -> Response:
        session, refused, form = await change(request)
        if refused is not None:
            return refused
        assert session is not None
        conversation = str(form.get("conversation_id", "")).strip()
        if not conversation or len(conversation) > MAX_CONVERSATION_ID or ":" not in conversation:
            return await operations(request, session, "a conversation id looks like wecom:<corp>:user:<userid>", 400)
        reset = ev.ConversationReset()
        reset.meta.event_id = f"console-reset-{secrets.token_hex(16)}"
        reset.meta.conversation_id = conversation
        reset.meta.correlation_id = reset.meta.event_id
        reset.meta.occurred_at.CopyFrom(now_timestamp())
        try:
            await console.publisher.publish(reset)
        except TransientError as exc:
            return await operations(request, session, str(exc), 503)
        await console.audit.record(session.user, "conversation.reset", conversation)
        return RedirectResponse("/operations?done=1", status_code=303)

    async def file_page(request: Request) -> Response:
        session = await admin(request)
        if session is None:
            return RedirectResponse("/login", status_code=303)
        file = file_of(request)
        if file is None:
            return await operations(request, session, "no such file", 404)
        return render(request, "file.html", "operations", session, file=file, content=console.files.read(file))

    async def file_save(request: Request) -> Response:
        session, refused, form = await change(request)
        if refused is not None:
            return refused
        assert session is not None
        file = file_of(request)
        if file is None:
            return await operations(request, session, "no such file", 404)
        content = str(form.get("content", ""))
        try:
            count = console.files.save(file, content)
        except (InvalidFileError, UnicodeError) as exc:
            return render(request, "file.html", "operations", session, 400, file=file, content=content, error=str(exc))
        await console.audit.record(session.user, "file.save", str(file.path), f"{count} entries")
        return RedirectResponse("/operations?done=1", status_code=303)

    return [
        Route("/", dashboard, methods=["GET"]),
        Route("/api/dashboard", dashboard_data, methods=["GET"]),
        Route("/login", login_page, methods=["GET"]),
        Route("/login/wecom", login_wecom, methods=["GET"]),
        Route("/login/callback", login_callback, methods=["GET"]),
        Route("/login/local", login_local, methods=["GET"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/playground", playground_page, methods=["GET"]),
        WebSocketRoute("/playground/ws", playground_socket),
        Route("/config", config_page, methods=["GET"]),
        Route("/operations", operations_page, methods=["GET"]),
        Route("/operations/dead-letters/{seq}/{verb}", dead_letter_action, methods=["POST"]),
        Route("/operations/reset", reset_conversation, methods=["POST"]),
        Route("/operations/files/{kind}/{index}", file_page, methods=["GET"]),
        Route("/operations/files/{kind}/{index}", file_save, methods=["POST"]),
        Mount("/static", StaticFiles(packages=[("wxbot_console", "static")]), name="static"),
    ]


def console_app(console: Console, extra: list[BaseRoute]) -> Starlette:
    return Starlette(routes=[*extra, *console_routes(console)])


def _is_admin(user: str, settings: ConsoleSettings) -> bool:
    return (user == LOCAL_OPERATOR and bool(settings.console_local_login_token)) or user in settings.admins


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() and len(text) < 19 else None
