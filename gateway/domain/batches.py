"""The Batch API's pure rules: a batch's states, and how its one reservation is shared out
exactly among its lines.

A batch's whole cost is reserved at creation in one admission step (every money and quota
check, as an online request's). Each line then owns an exact slice of that reservation: its
tokens are the batch's tokens number ``P`` to ``P + t - 1`` (lines in file order), priced at
the tier those positions fell in, and its cost is paid from the grants the reservation
debited in the same order. A completed line is charged its slice, a failed, cancelled or
expired one gets its slice back, and the slices of all lines add up to the reservation to the
nano-unit, whatever the mix.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

BATCH_LABEL = "@batch"  # usage of a batch is recorded under "<model>@batch": reports show it apart


class BatchStatus(enum.StrEnum):
    VALIDATING = "validating"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


# A batch in one of these is the worker's (it still has lines to answer or a file to write).
ACTIVE = frozenset({BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING, BatchStatus.CANCELLING})
CANCELLABLE = frozenset({BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS})


def usage_label(model: str) -> str:
    """The model name a batch's usage rows carry: ``all-MiniLM-L6-v2@batch``."""
    return model + BATCH_LABEL


def model_of_label(label: str) -> tuple[str, bool]:
    """``(model, is_batch)`` of a usage row's model name."""
    if label.endswith(BATCH_LABEL):
        return label[: -len(BATCH_LABEL)], True
    return label, False


@dataclass(frozen=True, slots=True)
class Reservation:
    """What admission took for the whole batch: its cost, the tokens in each price tier (in
    the order of the pricing's tiers) and the credit debited from each grant, in order."""

    cost_nano: int
    tier_tokens: tuple[int, ...]
    debits: str  # "grant:nano,..."

    def debit_list(self) -> list[tuple[str, int]]:
        parts = [part.split(":") for part in self.debits.split(",") if part]
        return [(grant, int(amount)) for grant, amount in parts]


@dataclass(frozen=True, slots=True)
class Share:
    """A set of lines' exact part of a reservation."""

    tokens: int
    cost_nano: int
    tier_tokens: tuple[int, ...]
    debits: str

    @property
    def empty(self) -> bool:
        return self.tokens == 0


def _overlap(lo: int, hi: int, start: int, end: int) -> int:
    return max(0, min(hi, end) - max(lo, start))


class Shares:
    """A reservation shared out among its lines (``line_tokens``, in file order); ``prices``
    are the nano per token of each tier, as ``reservation.tier_tokens`` counts them."""

    def __init__(self, reservation: Reservation, prices: Sequence[int], line_tokens: Sequence[int]) -> None:
        if len(prices) < len(reservation.tier_tokens):
            raise ValueError("a price for every tier the reservation counts")
        self.line_tokens = list(line_tokens)
        self.starts, position = [], 0
        for tokens in self.line_tokens:
            self.starts.append(position)
            position += tokens
        self.tier_bounds, floor = [], 0
        for count in reservation.tier_tokens:
            self.tier_bounds.append((floor, floor + count))
            floor += count
        if floor != position:
            raise ValueError(f"the reservation counts {floor} tokens, the lines {position}")
        # Each line's cost, then where it falls in the cost the grants paid.
        self.costs = [sum(self._in_tier(i, j) * prices[j] for j in range(len(self.tier_bounds)))
                      for i in range(len(self.line_tokens))]
        self.cost_starts, spent = [], 0
        for cost in self.costs:
            self.cost_starts.append(spent)
            spent += cost
        if spent != reservation.cost_nano:
            raise ValueError(f"the lines cost {spent} nano, the reservation {reservation.cost_nano}")
        self.grant_spans, paid = [], 0
        for grant, amount in reservation.debit_list():
            self.grant_spans.append((grant, paid, paid + amount))
            paid += amount

    def _in_tier(self, line: int, tier: int) -> int:
        lo, hi = self.tier_bounds[tier]
        return _overlap(lo, hi, self.starts[line], self.starts[line] + self.line_tokens[line])

    def share(self, lines: Sequence[int]) -> Share:
        """The part of the reservation ``lines`` (indexes into ``line_tokens``) own."""
        tokens = cost = 0
        tiers = [0] * len(self.tier_bounds)
        debited: dict[str, int] = {}
        for i in sorted(set(lines)):
            tokens += self.line_tokens[i]
            cost += self.costs[i]
            for j in range(len(tiers)):
                tiers[j] += self._in_tier(i, j)
            for grant, lo, hi in self.grant_spans:
                if part := _overlap(lo, hi, self.cost_starts[i], self.cost_starts[i] + self.costs[i]):
                    debited[grant] = debited.get(grant, 0) + part
        return Share(tokens=tokens, cost_nano=cost, tier_tokens=tuple(tiers),
                     debits=",".join(f"{grant}:{amount}" for grant, amount in debited.items()))


def chunks(total_lines: int, size: int) -> list[range]:
    """The work units a batch is answered in: ``size`` lines each, in file order."""
    return [range(start, min(start + size, total_lines)) for start in range(0, total_lines, size)]
