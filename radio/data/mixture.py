"""The deterministic deficit-round-robin mixture emitter over global sample slots."""

from fractions import Fraction
from math import lcm
from typing import Dict, List, Sequence


def integer_weights(weights: Sequence[float]) -> List[int]:
    """Exact integer weights proportional to ``weights`` (decimal floats read as written)."""
    fractions = [Fraction(str(float(w))) for w in weights]
    denominator = lcm(*(f.denominator for f in fractions))
    return [int(f * denominator) for f in fractions]


class MixtureEmitter:
    """Decides which source fills each global sample slot.

    Every slot, each source earns credit equal to its weight; the source with the largest credit
    (lowest index on ties) fills the slot and pays the total weight. Credits always sum to zero, so
    after any prefix of ``n`` slots a source's count stays within 2 of ``n * share`` (the tests check
    this property). Integer arithmetic keeps the sequence exact and identical on every process, and the
    state (slot index, credits, counts) is a few integers.
    """

    def __init__(self, weights: Sequence[float]):
        if not weights or any(not float(w) > 0 for w in weights):
            raise ValueError(f"mixture weights must all be > 0, got {list(weights)}")
        self.weights = integer_weights(weights)
        self.total = sum(self.weights)
        self.slot = 0
        self.credits = [0] * len(self.weights)
        self.counts = [0] * len(self.weights)

    @property
    def shares(self) -> List[float]:
        return [w / self.total for w in self.weights]

    def next_source(self) -> int:
        """Source index of the next global slot."""
        best = 0
        for index, weight in enumerate(self.weights):
            self.credits[index] += weight
            if self.credits[index] > self.credits[best]:
                best = index
        self.credits[best] -= self.total
        self.counts[best] += 1
        self.slot += 1
        return best

    def take(self, count: int) -> List[int]:
        """Source indices of the next ``count`` slots."""
        return [self.next_source() for _ in range(count)]

    def restart(self) -> None:
        """Clear the credits, as in a new emitter, keeping the slot index and counts: after a change of
        weights, every prefix from here on holds the new shares (within 2 samples)."""
        self.credits = [0] * len(self.weights)

    def state_dict(self) -> Dict[str, object]:
        return {"slot": self.slot, "credits": list(self.credits), "counts": list(self.counts)}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        if len(state["credits"]) != len(self.weights):
            raise ValueError(f"mixture state has {len(state['credits'])} sources, this run has {len(self.weights)}")
        self.slot = int(state["slot"])
        self.credits = [int(c) for c in state["credits"]]
        self.counts = [int(c) for c in state["counts"]]
