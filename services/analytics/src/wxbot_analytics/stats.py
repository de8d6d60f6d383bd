"""The statistics of the A/B report: Wilson intervals and a two-proportion z-test, in plain words."""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """95 % Wilson score interval of a proportion (None without data): honest at small n and near 0 or 1."""
    if n <= 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportion_p(s1: int, n1: int, s2: int, n2: int) -> tuple[float, float] | None:
    """z and two-sided p-value for p1 == p2 (pooled); None when it cannot be computed."""
    if n1 <= 0 or n2 <= 0:
        return None
    pooled = (s1 + s2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0, 1.0
    z = (s1 / n1 - s2 / n2) / se
    p = math.erfc(abs(z) / math.sqrt(2))
    return z, p


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    z: float | None
    p_value: float | None
    verdict: str

    def to_json(self) -> dict[str, object]:
        return {
            "a": self.a,
            "b": self.b,
            "metric": "positive_share",
            "z": None if self.z is None else round(self.z, 4),
            "p_value": None if self.p_value is None else round(self.p_value, 6),
            "verdict": self.verdict,
        }


def compare(a: str, pos_a: int, n_a: int, b: str, pos_b: int, n_b: int, min_n: int, alpha: float = 0.05) -> Comparison:
    """Which of two variants users like better, by their share of positive feedback."""
    if min(n_a, n_b) < min_n:
        return Comparison(
            a, b, None, None, f"not enough data yet ({min(n_a, n_b)} of {min_n} feedback needed per variant)"
        )
    result = two_proportion_p(pos_a, n_a, pos_b, n_b)
    assert result is not None
    z, p = result
    shown = f"p = {p:.2g}" if p >= 0.001 else "p < 0.001"
    if p >= alpha:
        return Comparison(a, b, z, p, f"no significant difference on positive feedback, {shown}")
    better = a if z > 0 else b
    return Comparison(a, b, z, p, f"{better} is better on positive feedback, {shown}")
