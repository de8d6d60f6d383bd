"""The wxbot skill SDK: `Skill`, its `@skill.tool` decorator, `SkillError` and `CallContext`."""

from wxbot_common.skill_contract import CallContext
from wxbot_skill.skill import Skill, SkillError

__all__ = ["CallContext", "Skill", "SkillError"]
