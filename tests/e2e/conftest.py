"""A whole wxbot — NATS, Redis, the four services as processes — against fake WeCom and LLM servers.

One stack per session for the common case: starting it costs seconds, and tests use distinct
users so they cannot see each other's conversations. Modules that need other settings start
their own with `running_world`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from typing import Any

import pytest

from tests.e2e.console_helpers import CONSOLE_ENV
from tests.e2e.harness import World, running_world

TAIL_LINES = 40


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """A failed test on a whole stack shows what each process said last (and what the supervisor
    did): the processes' output is kept, not printed, so a stuck pipeline is otherwise a bare timeout."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    worlds = {id(v): v for v in getattr(item, "funcargs", {}).values() if isinstance(v, World)}
    for found in worlds.values():
        stack = found.stack
        children = [stack.nats.child, stack.redis.child, *(r.child for r in stack.replicas)]
        for child in children:
            report.sections.append((f"{child.name}: last {TAIL_LINES} lines", child.tail(TAIL_LINES)))
        if stack.config.supervise:
            report.sections.append(("supervisor", "\n".join(list(stack.supervisor.log)[-TAIL_LINES:])))


@pytest.fixture(scope="session")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with running_world(tmp_path_factory.mktemp("stack")) as started:
        yield started


@pytest.fixture(scope="module")
async def console_world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    """A stack with the console (test_console*.py, one per module), whose lexicon and knowledge base are files
    an admin edits."""
    run_dir = tmp_path_factory.mktemp("console")
    lexicon = run_dir / "lexicon.txt"
    lexicon.write_text("违禁词甲\n")
    kb = run_dir / "faq.yaml"
    kb.write_text("- q: 营业时间\n  a: 每天九点到五点\n")
    env = {
        **CONSOLE_ENV,
        "SAFETY_WORDLIST_FILES": str(lexicon),
        "NLP_KB_FILES": str(kb),
        "SAFETY_LEXICON_RELOAD_S": "0.5",
        "NLP_KB_RELOAD_S": "0.5",
    }
    async with running_world(run_dir, env=env, console=True) as world:
        yield world
