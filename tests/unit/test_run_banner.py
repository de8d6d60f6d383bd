"""`make run`'s banner says whether WeCom is configured, naming what a `.env` is missing."""

from __future__ import annotations

from wxbot_devkit.run import WECOM_NEEDED, _wecom_state


def test_a_misspelt_variable_reads_as_missing_not_configured() -> None:
    complete = dict.fromkeys(WECOM_NEEDED, "x")
    assert _wecom_state(complete) == "configured"
    typo = {**{k: v for k, v in complete.items() if k != "WECOM_SECRET"}, "WECOM_CORP_SECRET": "x"}
    assert _wecom_state(typo) == "NOT configured, missing: WECOM_SECRET"
    assert _wecom_state({}).startswith("NOT configured: set WECOM_*")


def test_without_a_wecom_app_the_console_gets_a_one_time_local_login_token() -> None:
    from wxbot_devkit.run import CONSOLE_LOGIN_NEEDED, local_login_env

    first, second = local_login_env({}), local_login_env({"WECOM_CORP_ID": "ww1"})
    assert len(first["CONSOLE_LOCAL_LOGIN_TOKEN"]) >= 32
    assert first != second  # a new one each run
    assert local_login_env(dict.fromkeys(CONSOLE_LOGIN_NEEDED, "x")) == {}
