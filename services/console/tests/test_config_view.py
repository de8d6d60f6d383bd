"""The configuration page shows wxbot's variables and never a credential."""

from __future__ import annotations

from pathlib import Path

from wxbot_console.config_view import active_settings, mask


def test_credentials_are_never_shown() -> None:
    for name in ("WECOM_SECRET", "GATEWAY_BRIDGE_TOKEN", "LLM_API_KEY", "WECOM_ENCODING_AES_KEY", "CONSOLE_SECRET_KEY"):
        assert mask(name, "hunter2") == ("(set, hidden)", True)
    assert mask("WECOM_SECRET", "") == ("(empty)", False)
    assert mask("REDIS_URL", "redis://:pw@127.0.0.1:6379/0") == ("redis://:***@127.0.0.1:6379/0", True)
    assert mask("NATS_URL", "nats://a:1,nats://u:p@b:2") == ("nats://a:1,nats://u:***@b:2", True)
    assert mask("LLM_MODEL", "gpt-x") == ("gpt-x", False)


def test_only_wxbot_variables_from_the_environment_then_dotenv(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("LLM_MODEL=from-file\nWECOM_SECRET=s3cret\nUNRELATED=x\n")
    shown = {s.name: s for s in active_settings({"LLM_MODEL": "from-env", "HOME": "/root"}, dotenv)}
    assert set(shown) == {"LLM_MODEL", "WECOM_SECRET"}
    assert (shown["LLM_MODEL"].value, shown["LLM_MODEL"].source) == ("from-env", "environment")
    assert (shown["WECOM_SECRET"].value, shown["WECOM_SECRET"].source) == ("(set, hidden)", ".env")
