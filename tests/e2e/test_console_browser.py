"""The console in a real browser: headless Chromium (Debian's `chromium`) driven by Playwright.

An admin logs in through the fake WeCom's web login page and lands on the dashboard, where a
chart renders; another member is refused; a playground message gets the bot's reply on the page
(and script in chat text stays text); a dead letter is replayed from the operations page.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.console_helpers import ADMIN, console_url, make_dead_letter
from tests.e2e.harness import World
from wxbot_devkit.fakes.media_files import amr_bytes, png_bytes

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

INSTALL_HINT = (
    "Chromium not found: the browser tests need Debian's chromium package "
    "(`apt-get install -y chromium`; .ci/run installs it) and the playwright package (make install)"
)
TIMEOUT_MS = 30_000


def chromium_path() -> str | None:
    """The browser binary itself (Debian's /usr/bin/chromium is a wrapper script)."""
    real = Path("/usr/lib/chromium/chromium")
    if real.is_file():
        return str(real)
    return shutil.which("chromium") or shutil.which("chromium-browser")


try:
    from playwright.async_api import Browser, Page, async_playwright, expect
except ImportError:  # pragma: no cover - make install provides it
    pytest.skip(INSTALL_HINT, allow_module_level=True)
if chromium_path() is None:
    pytest.skip(INSTALL_HINT, allow_module_level=True)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(locale="en-US")
    context.set_default_timeout(TIMEOUT_MS)
    opened = await context.new_page()
    try:
        yield opened
    finally:
        await context.close()


async def log_in_as(page: Page, world: World, member_name: str) -> None:
    """Through the console's login page and the fake WeCom's, as a person would click."""
    await page.goto(f"{console_url(world)}/")
    await page.locator("#login-wecom").click()
    await page.get_by_role("button", name=member_name).click()


async def test_admin_lands_on_the_dashboard_and_a_chart_renders(console_world: World, page: Page) -> None:
    await log_in_as(page, console_world, f"张三 ({ADMIN})")
    await expect(page).to_have_url(f"{console_url(console_world)}/")
    await expect(page.locator("#user")).to_have_text(ADMIN)
    await expect(page.locator("#health tbody tr").first).to_be_visible()
    await expect(page.locator("#health")).to_contain_text("gateway")
    # uPlot draws into a canvas once two samples exist (consumer lag is reported from the start).
    await expect(page.locator("#chart-lag canvas")).to_have_count(1, timeout=TIMEOUT_MS)
    # The stack's analytics service answers the dashboard's report: the A/B verdict and the summary.
    await expect(page.locator("#ab-verdict")).to_contain_text("A/B report:")
    await expect(page.locator("#analytics table").first).to_contain_text("messages")


async def test_a_member_who_is_not_an_admin_is_refused(console_world: World, page: Page) -> None:
    await log_in_as(page, console_world, "李四 (lisi)")
    await expect(page.locator("#message")).to_contain_text("not an admin")
    await page.goto(f"{console_url(console_world)}/playground")
    await expect(page).to_have_url(f"{console_url(console_world)}/login")


async def test_playground_message_gets_the_reply_and_script_stays_text(console_world: World, page: Page) -> None:
    await log_in_as(page, console_world, f"张三 ({ADMIN})")
    await page.get_by_role("link", name="Playground").click()
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    await page.locator("#text").fill("hello from the browser")
    await page.keyboard.press("Enter")
    await expect(page.locator("#chat li.bot").last).to_contain_text("LLM says: hello from the browser")
    hostile = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script>'
    await page.locator("#text").fill(hostile)
    await page.get_by_role("button", name="Send").click()
    await expect(page.locator("#chat li.bot").last).to_contain_text(f"LLM says: {hostile}")
    assert await page.locator("#chat li.you").last.text_content() == f"You: {hostile}"
    assert await page.locator("#chat img, #chat script").count() == 0
    assert await page.evaluate("window.__pwned") is None


async def test_an_uploaded_image_is_shown_and_answered(console_world: World, page: Page, tmp_path: Path) -> None:
    picture = tmp_path / "red.png"
    picture.write_bytes(png_bytes(32, 32, (220, 20, 20)))
    await log_in_as(page, console_world, f"张三 ({ADMIN})")
    await page.goto(f"{console_url(console_world)}/playground")
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    await page.locator("#text").fill("which colour?")
    await page.locator("#image").set_input_files(str(picture))
    await page.get_by_role("button", name="Send").click()
    await expect(page.locator("#chat li.you img")).to_have_attribute("alt", "which colour?")
    await expect(page.locator("#chat li.bot").last).to_contain_text("LLM says: which colour?")
    big = tmp_path / "big.png"
    big.write_bytes(png_bytes(32, 32, (1, 2, 3)) + b"\0" * 50_000)
    await page.locator("#image").set_input_files(str(big))
    await page.get_by_role("button", name="Send").click()
    await expect(page.locator("#chat li.error").last).to_contain_text("too large")


async def test_an_uploaded_voice_message_is_transcribed_and_answered(
    console_world: World, page: Page, tmp_path: Path
) -> None:
    recording = tmp_path / "question.amr"
    recording.write_bytes(amr_bytes(1.0, seed=11))
    console_world.llm.media.say("语音里的问题")
    await log_in_as(page, console_world, f"张三 ({ADMIN})")
    await page.goto(f"{console_url(console_world)}/playground")
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    await page.locator("#voice").set_input_files(str(recording))
    await page.get_by_role("button", name="Send").click()
    await expect(page.locator("#chat li.you audio")).to_have_count(1)
    await expect(page.locator("#chat li.bot").last).to_contain_text("LLM says: 语音里的问题")


async def test_replay_a_dead_letter(console_world: World, page: Page) -> None:
    user = "browser-dlq-user"
    seq = await make_dead_letter(console_world, user, "replayed from the browser")
    await log_in_as(page, console_world, f"张三 ({ADMIN})")
    await page.get_by_role("link", name="Operations").click()
    row = page.locator(f"#dl-{seq}")
    await expect(row).to_contain_text("e2e: gave up")
    await row.get_by_role("button", name="Replay").click()
    await expect(page.locator(".notice")).to_have_text("Done")
    await expect(page.locator(f"#dl-{seq}")).to_have_count(0)
    await expect(page.locator("#audit")).to_contain_text("dead_letter.replay")
    sent = await console_world.wecom.wait_for_messages(user, timeout=30)
    assert sent[0].content == "LLM says: replayed from the browser (saw 2 messages)"
