"""A/B variants: model, prompt and temperature per variant, chosen by weight and a stable hash of
the user, so one user always meets the same variant and results compare per variant."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Variant:
    name: str
    weight: int = 1
    model: str | None = None  # None: LLM_MODEL
    temperature: float | None = None  # None: LLM_TEMPERATURE
    system_prompt: str | None = None  # None: the deployment's prompt

    def resolve(self, model: str, temperature: float, system_prompt: str) -> Variant:
        """This variant with the deployment's defaults filled in where it sets nothing."""
        return replace(
            self,
            model=self.model or model,
            temperature=temperature if self.temperature is None else self.temperature,
            system_prompt=system_prompt if self.system_prompt is None else self.system_prompt,
        )

    @property
    def fingerprint(self) -> str:
        """Changes whenever what the variant would answer changes (for the answer cache)."""
        raw = json.dumps([self.name, self.model, self.temperature, self.system_prompt], ensure_ascii=False)
        return hashlib.sha256(raw.encode()).hexdigest()[:16]


def parse_variants(raw: str) -> list[Variant]:
    """`NLP_VARIANTS`: a JSON list of {name, weight, model?, temperature?, system_prompt?}."""
    if not raw.strip():
        return [Variant("default")]
    try:
        items = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"NLP_VARIANTS is not JSON: {exc}") from exc
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) and "name" in i for i in items):
        raise ValueError("NLP_VARIANTS must be a non-empty JSON list of objects with a name")
    try:
        variants = [
            Variant(
                name=str(i["name"]),
                weight=int(i.get("weight", 1)),
                model=None if i.get("model") is None else str(i["model"]),
                temperature=None if i.get("temperature") is None else float(i["temperature"]),
                system_prompt=None if i.get("system_prompt") is None else str(i["system_prompt"]),
            )
            for i in items
        ]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"NLP_VARIANTS has a weight or temperature that is not a number: {exc}") from exc
    if any(v.weight < 0 for v in variants) or sum(v.weight for v in variants) <= 0:
        raise ValueError("NLP_VARIANTS weights must be ≥ 0 with a positive sum")
    if len({v.name for v in variants}) != len(variants):
        raise ValueError("NLP_VARIANTS names must be unique")
    return variants


def assign(variants: list[Variant], user_key: str) -> Variant:
    """The variant of a user: stable for the user, spread by weight across users."""
    total = sum(v.weight for v in variants)
    point = int(hashlib.sha256(f"ab:{user_key}".encode()).hexdigest()[:12], 16) % total
    for v in variants:
        if point < v.weight:
            return v
        point -= v.weight
    return variants[-1]
