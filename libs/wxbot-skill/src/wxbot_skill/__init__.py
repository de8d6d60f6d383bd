"""The wxbot skill SDK: `Skill`, its `@skill.tool` decorator and `SkillError`."""

from wxbot_skill.skill import Skill, SkillError

__all__ = ["Skill", "SkillError"]
