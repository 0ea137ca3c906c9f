"""Bad samples of real data: skipped, counted per reason, reported, and bounded.

A training sample that cannot be used (a missing or corrupt image, an empty caption, an unreadable
row or shard member) is never replaced by something else: the dataset hands a :class:`Skipped`
marker to the collate function, which leaves it out of the batch and records it in
``batch.skipped``. The data module adds those records to a :class:`SkipLedger`; the
:class:`~mmresearch.callbacks.data_quality.DataQuality` callback reports them at the end of every
epoch and stops the run when their share passes ``data.max_skipped_fraction``.

Evaluation sets are never thinned: there the same problems raise :class:`DataError` naming the file.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Union

#: Reasons a sample is skipped. ``ddp_balance`` is not a data problem: valid pairs dropped so that
#: every rank trains on the same batch size after another rank skipped samples (not counted
#: against the threshold).
REASONS = ("unreadable_row", "empty_caption", "missing_image", "corrupt_image", "ddp_balance")
DATA_REASONS = REASONS[:-1]
#: distinct sample names kept per reason for messages, each with the samples it cost
EXAMPLES_PER_REASON = 5
#: ``{reason: {name: samples skipped}}``: a corrupt image with 5 captions is one name with count 5
Examples = Dict[str, Dict[str, int]]


class DataError(ValueError):
    """A data file or sample cannot be used where dropping it would change a result (evaluation
    sets, a whole batch of bad samples); the message names the file or sample."""


class DataQualityError(DataError):
    """More samples were skipped than ``data.max_skipped_fraction`` allows."""


@dataclass(frozen=True)
class Skipped:
    """What a dataset returns instead of a sample it cannot read: the reason (one of
    :data:`DATA_REASONS`), the sample's name (file, shard member or row) and a short detail."""

    reason: str
    name: str
    detail: str = ""

    def __post_init__(self) -> None:
        if self.reason not in DATA_REASONS:
            raise ValueError(f"unknown skip reason {self.reason!r}; allowed: {list(DATA_REASONS)}")


def example_counts(names: Union[Mapping[str, int], Iterable[str]]) -> Dict[str, int]:
    """``{name: count}`` of a mapping (copied) or of a list with one name per skipped sample."""
    if isinstance(names, Mapping):
        return {str(k): int(v) for k, v in names.items()}
    return dict(Counter(map(str, names)))


def add_example(examples: Examples, reason: str, name: str, count: int = 1) -> None:
    """Count ``count`` samples of ``name`` under ``reason``; a new name is kept only while the
    reason has fewer than :data:`EXAMPLES_PER_REASON` names."""
    kept = examples.setdefault(reason, {})
    if name in kept or len(kept) < EXAMPLES_PER_REASON:
        kept[name] = kept.get(name, 0) + int(count)


def format_examples(names: Mapping[str, int], limit: int = 3) -> str:
    """``"a.jpg x5, b.jpg"``: the first ``limit`` names, with the count where it is above 1."""
    return ", ".join(f"{name} x{n}" if n > 1 else name for name, n in list(names.items())[:limit])


def summarize(skipped: Iterable[Skipped]) -> Dict[str, List[str]]:
    """``{reason: [sample names]}`` of the markers (what a batch carries in ``batch.skipped``)."""
    out: Dict[str, List[str]] = {}
    for s in skipped:
        out.setdefault(s.reason, []).append(f"{s.name} ({s.detail})" if s.detail else s.name)
    return out


@dataclass
class SkipLedger:
    """Counts of skipped and used samples, per reason, for the data set up once (``setup_*``) and
    for the epoch in progress (``epoch_*``).

    ``setup`` counts come from reading the annotation files (unreadable rows, empty captions,
    missing image files) and are the same on every rank; ``epoch`` counts come from loading
    samples (corrupt images, bad shard members) and are per rank until reduced by the callback.
    """

    setup_skipped: Counter = field(default_factory=Counter)
    setup_total: int = 0
    epoch_skipped: Counter = field(default_factory=Counter)
    epoch_used: int = 0
    examples: Examples = field(default_factory=dict)
    history: List[dict] = field(default_factory=list)

    def add_setup(self, counts: Mapping[str, int], total: int, examples: Optional[Mapping[str, Mapping[str, int]]] = None) -> None:
        self.setup_skipped.update({k: int(v) for k, v in counts.items() if v})
        self.setup_total += int(total)
        self._keep_examples(examples or {})

    def add_batch(self, skipped: Optional[Mapping[str, List[str]]], used: int) -> None:
        self.epoch_used += int(used)
        for reason, names in (skipped or {}).items():
            self.epoch_skipped[reason] += len(names)
        self._keep_examples(skipped or {})

    def add_dropped(self, reason: str, count: int) -> None:
        if count:
            self.epoch_skipped[reason] += int(count)

    def _keep_examples(self, examples: Mapping[str, Union[Mapping[str, int], List[str]]]) -> None:
        """Add ``{reason: {name: count}}`` (set-up) or ``{reason: [name per sample]}`` (a batch)."""
        for reason, names in examples.items():
            for name, count in example_counts(names).items():
                add_example(self.examples, reason, name, count)

    def restore_examples(self, state: Mapping[str, Union[Mapping[str, int], List[str]]]) -> None:
        """The examples of a checkpoint (``{name: count}``, or a list of names from checkpoints
        written before the counts) for the reasons this ledger has none of yet."""
        for reason, names in state.items():
            self.examples.setdefault(reason, example_counts(names))

    def reset_epoch(self) -> None:
        self.epoch_skipped = Counter()
        self.epoch_used = 0

    @staticmethod
    def fraction(skipped: Mapping[str, int], used: int) -> float:
        """Share of bad samples among all samples tried (``ddp_balance`` is neither)."""
        bad = sum(int(skipped.get(r, 0)) for r in DATA_REASONS)
        tried = bad + int(used)
        return bad / tried if tried else 0.0

    @property
    def setup_fraction(self) -> float:
        return self.fraction(self.setup_skipped, self.setup_total - sum(self.setup_skipped.values()))

    def summary(self) -> dict:
        """What ``results.json`` records under ``data_quality``."""
        return {
            "setup": {"samples": self.setup_total, "skipped": dict(self.setup_skipped), "fraction": round(self.setup_fraction, 6)},
            "epochs": list(self.history),
            "examples": {k: dict(v) for k, v in self.examples.items()},
        }


def format_counts(counts: Mapping[str, int]) -> str:
    parts = [f"{reason}={int(counts[reason])}" for reason in REASONS if counts.get(reason)]
    return ", ".join(parts) or "none"


def check_fraction(what: str, skipped: Mapping[str, int], used: int, limit: float, examples: Mapping[str, Mapping[str, int]]) -> None:
    """Raise :class:`DataQualityError` when the share of bad samples passes ``limit``; the message
    names up to 3 files per reason, each once with the samples it cost."""
    share = SkipLedger.fraction(skipped, used)
    if share > limit:
        shown = "; ".join(f"{r}: {format_examples(names)}" for r, names in examples.items() if names)
        raise DataQualityError(
            f"{what}: {share:.2%} of the samples were skipped ({format_counts(skipped)}; {used} used), more than "
            f"data.max_skipped_fraction={limit:g}. Fix the data or raise the limit. Examples: {shown or 'none kept'}"
        )
