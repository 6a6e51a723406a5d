"""The review queue: the cells a hematologist should look at first, each with the reasons.

In order of priority: predicted blasts and blast equivalents (they decide the diagnosis), cells the
classifier abstained on or was unsure of, known confusions (lymphoblast ↔ lymphocyte / haematogone,
myeloblast ↔ promyelocyte: the second class close behind the first), rare classes (under
``rare_fraction`` of the counted cells), then a seeded random QA sample of the rest. Within a
reason, least confident first. Added and deleted cells are left out (the reviewer made them).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from marrowscope import taxonomy
from marrowscope.counting import BLAST_LABELS
from marrowscope.review.tally import ReviewedCell

#: Pairs the morphology confuses (either way): a cell of one class whose runner-up is the other.
CONFUSIONS: tuple[tuple[frozenset[str], frozenset[str]], ...] = (
    (
        frozenset({"lymphoblast", "lymphocytic_blast"}),
        frozenset({"lymphocyte", "lymphoidocyte", "prolymphocyte"}),
    ),
    (frozenset({"myeloblast", "myelocytic_blast"}), frozenset({"promyelocyte"})),
)
REASONS: tuple[str, ...] = ("blast", "uncertain", "low confidence", "confusion", "rare class", "QA sample")


@dataclass(frozen=True)
class QueueConfig:
    low_confidence: float = 0.6
    confusion_margin: float = 0.3  # runner-up within this probability of the top class
    rare_fraction: float = 0.02
    qa_fraction: float = 0.05
    seed: int = 0


@dataclass(frozen=True)
class QueueItem:
    cell_id: int
    reasons: tuple[str, ...]


def _runner_up(r: ReviewedCell) -> tuple[str | None, float]:
    p = r.cell.probabilities or {}
    if len(p) < 2:
        return None, 0.0
    (_, p1), (c2, p2) = sorted(p.items(), key=lambda kv: -kv[1])[:2]
    return c2, p1 - p2


def _confused(label: str | None, runner: str | None) -> bool:
    if label is None or runner is None:
        return False
    return any((label in a and runner in b) or (label in b and runner in a) for a, b in CONFUSIONS)


def review_queue(cells: Sequence[ReviewedCell], cfg: QueueConfig | None = None) -> list[QueueItem]:
    cfg = cfg or QueueConfig()
    model_cells = [r for r in cells if not r.added and r.state != "deleted"]
    counts = Counter(r.model_label for r in model_cells if r.model_label is not None)
    n = sum(v for k, v in counts.items() if k in taxonomy.LABELS and taxonomy.is_countable(k)) or 1
    items: dict[int, list[str]] = {}
    for r in model_cells:
        why = []
        lab = r.model_label
        if lab in BLAST_LABELS:
            why.append("blast")
        if lab is None:
            why.append("uncertain")
        elif r.confidence is not None and r.confidence < cfg.low_confidence:
            why.append("low confidence")
        runner, margin = _runner_up(r)
        if margin <= cfg.confusion_margin and _confused(lab, runner):
            why.append("confusion")
        if (
            lab is not None
            and lab in taxonomy.LABELS
            and taxonomy.is_countable(lab)
            and counts[lab] / n < cfg.rare_fraction
        ):
            why.append("rare class")
        if why:
            items[r.cell_id] = why
    rest = [r.cell_id for r in model_cells if r.cell_id not in items]
    k = round(cfg.qa_fraction * len(rest))
    for cid in random.Random(cfg.seed).sample(rest, min(k, len(rest))):
        items[cid] = ["QA sample"]
    conf = {r.cell_id: (r.confidence if r.confidence is not None else 0.0) for r in model_cells}
    order = {name: i for i, name in enumerate(REASONS)}
    ranked = sorted(items, key=lambda cid: (order[items[cid][0]], conf[cid], cid))
    return [QueueItem(cid, tuple(items[cid])) for cid in ranked]
