"""A/B variants: model, prompt and temperature per variant, chosen by weight and a stable hash of
the user, so one user always meets the same variant and results compare per variant."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    name: str
    weight: int = 1
    model: str | None = None  # None: LLM_MODEL
    temperature: float | None = None  # None: LLM_TEMPERATURE
    system_prompt: str | None = None  # None: the deployment's prompt


def parse_variants(raw: str) -> list[Variant]:
    """`NLP_VARIANTS`: a JSON list of {name, weight, model?, temperature?, system_prompt?}."""
    if not raw.strip():
        return [Variant("default")]
    items = json.loads(raw)
    if not isinstance(items, list) or not items:
        raise ValueError("NLP_VARIANTS must be a non-empty JSON list")
    variants = [
        Variant(
            name=str(i["name"]),
            weight=int(i.get("weight", 1)),
            model=i.get("model"),
            temperature=None if i.get("temperature") is None else float(i["temperature"]),
            system_prompt=i.get("system_prompt"),
        )
        for i in items
    ]
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
