"""wxbot's built-in skills, each a `wxbot_skill.Skill` built by its own subpackage, mounted by `app.py`."""
