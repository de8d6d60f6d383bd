"""Wrong configuration stops the service at start with the variable named, instead of failing
answers later; good configuration resolves into variants and an LLM time budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from wxbot_nlp.resilience import MAX_BACKOFF_S
from wxbot_nlp.settings import NlpSettings


def settings(**values: Any) -> NlpSettings:
    return NlpSettings(_env_file=None, **values)


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"nlp_kb_files": "/nonexistent/faq.yaml"}, "NLP_KB_FILES"),
        ({"nlp_system_prompt_file": "/nonexistent/prompt.txt"}, "NLP_SYSTEM_PROMPT_FILE"),
        ({"nlp_variants": '[{"name": "a", "weight": -1}]'}, "NLP_VARIANTS"),
        ({"nlp_variants": "not json"}, "NLP_VARIANTS"),
        ({"llm_timeout_s": 0}, "llm_timeout_s"),
        ({"nlp_kb_min_score": 1.5}, "nlp_kb_min_score"),
        ({"llm_retries": -1}, "llm_retries"),
        ({"llm_answer_deadline_s": 0}, "llm_answer_deadline_s"),
    ],
)
def test_bad_configuration_is_refused_with_the_variable_named(values: dict[str, Any], named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        settings(**values)


def test_the_prompt_file_wins_and_variants_inherit_the_deployment(tmp_path: Path) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("  You are the ACME helpdesk.\n", encoding="utf-8")
    s = settings(
        nlp_system_prompt="ignored",
        nlp_system_prompt_file=str(prompt),
        llm_model="deepseek-chat",
        nlp_variants='[{"name": "a"}, {"name": "b", "model": "qwen-plus", "system_prompt": "B"}]',
    )
    a, b = s.variants()
    assert (a.model, a.system_prompt) == ("deepseek-chat", "You are the ACME helpdesk.")
    assert (b.model, b.system_prompt, b.temperature) == ("qwen-plus", "B", s.llm_temperature)


def test_the_llm_budget_covers_every_attempt_the_waits_and_the_fallback_within_the_deadline() -> None:
    patient = settings(llm_timeout_s=10, llm_retries=2, llm_answer_deadline_s=1000)
    assert patient.llm_budget_s() == 3 * 10 + 2 * MAX_BACKOFF_S
    with_fallback = settings(llm_timeout_s=10, llm_retries=0, llm_fallback_base_url="http://127.0.0.1:9/v1")
    assert with_fallback.llm_budget_s() == 20
    assert settings(llm_timeout_s=10, llm_retries=2).llm_budget_s() == 60  # LLM_ANSWER_DEADLINE_S's default
    assert settings(llm_answer_deadline_s=3).llm_budget_s() == 3
