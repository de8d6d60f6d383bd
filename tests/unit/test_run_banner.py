"""`make run`'s banner says whether WeCom is configured, naming what a `.env` is missing."""

from __future__ import annotations

from wxbot_devkit.run import WECOM_NEEDED, _wecom_state


def test_a_misspelt_variable_reads_as_missing_not_configured() -> None:
    complete = dict.fromkeys(WECOM_NEEDED, "x")
    assert _wecom_state(complete) == "configured"
    typo = {**{k: v for k, v in complete.items() if k != "WECOM_SECRET"}, "WECOM_CORP_SECRET": "x"}
    assert _wecom_state(typo) == "NOT configured, missing: WECOM_SECRET"
    assert _wecom_state({}).startswith("NOT configured: set WECOM_*")
