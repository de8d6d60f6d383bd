"""A complete third-party wxbot skill: `python examples/unit_converter.py` beside wxbot (same NATS_URL).
Within 15 s the model can call it, and users can type `/temp 36.6` (°C to °F)."""

from typing import Annotated, Literal

from pydantic import Field

from wxbot_skill import Skill, SkillError

skill = Skill("unit-converter", "1.0.0", "Converts temperatures")


@skill.tool(command="/temp")
async def convert_temperature(
    value: float, to: Annotated[Literal["celsius", "fahrenheit"], Field(description="the unit wanted")] = "fahrenheit"
) -> str:
    """Convert a temperature between degrees Celsius and degrees Fahrenheit."""
    result = value * 9 / 5 + 32 if to == "fahrenheit" else (value - 32) * 5 / 9
    if result < (-459.67 if to == "fahrenheit" else -273.15):
        raise SkillError(f"{value:g} is below absolute zero")
    return f"{value:g} °{'C' if to == 'fahrenheit' else 'F'} = {result:.1f} °{to[0].upper()}"


if __name__ == "__main__":
    skill.run()
