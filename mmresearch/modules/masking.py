"""Masked-language-model (MLM) masking of token-id tensors, BERT style (Devlin et al., 2019).

:class:`MLMMasker` takes a padded batch ``input_ids [B, L]`` (with its ``attention_mask [B, L]``)
and returns a masked copy plus the labels for the MLM loss (:class:`MaskedTokens`). It runs on
whatever device the ids live on, with a few tensor operations per batch (no Python loop over
tokens or sequences, no host-device synchronisation), and never modifies its input.

Rules:

- **Eligible positions**: ``attention_mask == 1`` and the id is not one of the tokenizer's special
  ids (``tokenizer.all_special_ids``: ``[CLS] [SEP] [PAD] [MASK] [UNK]`` ...). Nothing else is ever
  chosen, replaced or labelled.
- **Choice**: every eligible position (or, with ``whole_word=True``, every eligible *word*) is
  chosen independently with probability ``probability`` (Bernoulli per unit, as in Hugging Face's
  ``DataCollatorForLanguageModeling``; the original BERT code picked exactly
  ``max(1, round(n * p))`` positions per sequence instead).
- **At least one per sequence** (``at_least_one=True``, the default): a sequence that has eligible
  positions but got none chosen gets one unit chosen uniformly at random among its eligible units
  (a token, or a word with ``whole_word=True``), so every such sequence contributes to the loss
  (a common practical rule, also in BERT's original ``create_pretraining_data.py``). This raises
  the expected masking rate of a sequence with ``n`` eligible units from ``p`` to
  ``p + (1 - p) ** n / n`` (p = 0.15: 0.28 for n = 4, 0.17 for n = 10, 0.152 for n = 20, negligible beyond ~30).
  ``at_least_one=False`` gives exactly the Bernoulli rate. Sequences without eligible positions
  (all padding / special tokens) are left unchanged with all labels ``-100``.
- **Replacement** of every chosen *token* (independently per token, also with whole-word masking,
  as in BERT's whole-word-masking release): with probability ``mask_replace_prob`` by the
  ``[MASK]`` id, with probability ``random_replace_prob`` by a token id drawn uniformly from the
  non-special vocabulary (it may coincide with the original token), otherwise kept unchanged.
  Defaults 0.8 / 0.1 / (0.1 unchanged). One uniform draw per token decides, so the split is exact
  in expectation. (Hugging Face's collator forces ``mask_replace_prob=1`` with whole-word masking
  and draws random ids from the full vocabulary, special tokens included; we do neither.)
- **Labels**: the original id at chosen positions, ``-100`` (the ``ignore_index`` of
  ``torch.nn.functional.cross_entropy``) everywhere else.

Whole-word masking (``whole_word=True``): words are runs of tokens grouped by the tokenizer's
subword convention, read once from the vocabulary (``convert_ids_to_tokens``) into a boolean
"starts a word" table:

- WordPiece (BERT): a token starting with ``##`` continues the previous word; every other token
  starts one (so punctuation is a word of its own, as in BERT's whole-word masking).
- SentencePiece (``▁``) / byte-level BPE (``Ġ``): a token starting with the marker starts a word;
  others continue the previous word (so ``"there?"`` -> ``Ġthere ?`` is one word).

The convention is the one whose marker is more frequent in the vocabulary. A vocabulary with
neither marker (word-level or character-level) makes every token its own word (with a warning).
An eligible token right after an ineligible one (``[CLS]``, a special token, position 0) always
starts a word, so RoBERTa's first word (no ``Ġ``) and tokens after ``[UNK]`` are handled. A chosen
word is masked whole: every one of its tokens is chosen (and labelled).

Randomness: every random number comes from ``generator`` (or the global RNG). Numbers are drawn
on the generator's device and moved to the ids' device, so a CPU generator with a fixed seed gives
the same masking for the same ids on CPU and on an accelerator.
"""

from __future__ import annotations

import logging
import numbers
from dataclasses import dataclass
from typing import Dict, NamedTuple, Optional

import torch
from torch import Tensor

from mmresearch.utils.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["IGNORE_INDEX", "MaskedTokens", "MLMMasker"]

#: Label of positions that do not count in the loss (``cross_entropy``'s default ``ignore_index``).
IGNORE_INDEX = -100

_CONTINUATION_PREFIX = "##"  # WordPiece
_WORD_START_PREFIXES = ("\u2581", "\u0120")  # SentencePiece "▁", byte-level BPE "Ġ"


@dataclass
class MaskedTokens:
    """Output of :class:`MLMMasker`.

    ``input_ids [B, L]``: masked copy of the ids (same dtype and device as the input).
    ``labels [B, L]`` (long): the original id at chosen positions, ``-100`` elsewhere.
    """

    input_ids: Tensor
    labels: Tensor

    @property
    def chosen(self) -> Tensor:
        """``[B, L]`` bool: the positions chosen for prediction (``labels != -100``)."""
        return self.labels != IGNORE_INDEX


class _Tables(NamedTuple):
    special: Tensor  # [V] bool: id is a special token
    word_start: Tensor  # [V] bool: id starts a word (whole-word masking)
    random_ids: Tensor  # [V'] long: ids random replacements are drawn from (non-special)


def _check_probability(name: str, value: object, allow_zero: bool) -> float:
    interval = "[0, 1]" if allow_zero else "(0, 1]"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"model.objectives.mlm.{name} must be a number in {interval}, got {value!r}")
    value = float(value)
    if not ((0.0 <= value if allow_zero else 0.0 < value) and value <= 1.0):
        raise ConfigError(f"model.objectives.mlm.{name} must be in {interval}, got {value!r}")
    return value


class MLMMasker:
    """BERT-style MLM masking of a padded batch of token ids (see the module docstring for the rules).

    Args:
        tokenizer: a ``transformers`` tokenizer (anything with ``mask_token_id``,
            ``all_special_ids``, ``__len__`` and ``convert_ids_to_tokens``).
        probability: chance that an eligible token (word, with ``whole_word``) is chosen; (0, 1].
        mask_replace_prob: chance that a chosen token becomes ``[MASK]``; [0, 1].
        random_replace_prob: chance that a chosen token becomes a random non-special token; [0, 1],
            ``mask_replace_prob + random_replace_prob <= 1`` (the rest stays unchanged).
        whole_word: choose whole words instead of single tokens.
        at_least_one: choose one unit in every sequence that has eligible tokens but got none.

    Raises:
        ConfigError (a ``ValueError``) naming the ``model.objectives.mlm.*`` key for a bad argument.

    Call: ``masker(input_ids [B, L] integer, attention_mask [B, L] or None, generator=None)``
    -> :class:`MaskedTokens`. Ids must lie in ``[0, len(tokenizer))`` (checked on CPU only, to
    avoid a device synchronisation on accelerators). ``attention_mask=None`` treats every position
    as attended (padding is still never chosen: ``[PAD]`` is a special token).
    """

    def __init__(
        self,
        tokenizer,
        probability: float = 0.15,
        mask_replace_prob: float = 0.8,
        random_replace_prob: float = 0.1,
        whole_word: bool = False,
        at_least_one: bool = True,
    ) -> None:
        self.probability = _check_probability("probability", probability, allow_zero=False)
        self.mask_replace_prob = _check_probability("mask_replace_prob", mask_replace_prob, allow_zero=True)
        self.random_replace_prob = _check_probability("random_replace_prob", random_replace_prob, allow_zero=True)
        if self.mask_replace_prob + self.random_replace_prob > 1.0 + 1e-9:
            raise ConfigError(
                "model.objectives.mlm.mask_replace_prob + model.objectives.mlm.random_replace_prob must be <= 1 "
                f"(the rest of the chosen tokens stays unchanged), got {mask_replace_prob!r} + {random_replace_prob!r}"
            )
        for name, flag in (("whole_word", whole_word), ("at_least_one", at_least_one)):
            if not isinstance(flag, bool):
                raise ConfigError(f"model.objectives.mlm.{name} must be true or false, got {flag!r}")
        self.whole_word, self.at_least_one = whole_word, at_least_one

        mask_id = getattr(tokenizer, "mask_token_id", None)
        if mask_id is None:
            raise ConfigError(
                f"model.mlm needs a tokenizer with a mask token; {type(tokenizer).__name__} has none "
                "(set tokenizer.mask_token, or use a BERT-style tokenizer)"
            )
        self.mask_token_id = int(mask_id)
        vocab_size = len(tokenizer)
        special = torch.zeros(vocab_size, dtype=torch.bool)
        special_ids = [int(i) for i in tokenizer.all_special_ids if i is not None and 0 <= int(i) < vocab_size]
        special[special_ids] = True
        if not 0 <= self.mask_token_id < vocab_size:
            raise ConfigError(f"model.mlm: the tokenizer's mask token id {self.mask_token_id} is outside its vocabulary (size {vocab_size})")
        special[self.mask_token_id] = True
        random_ids = torch.nonzero(~special).flatten()
        if self.random_replace_prob > 0 and random_ids.numel() == 0:
            raise ConfigError("model.objectives.mlm.random_replace_prob > 0 but the tokenizer has no non-special tokens to draw from")
        word_start = self._word_start_table(tokenizer, vocab_size) if whole_word else torch.ones(vocab_size, dtype=torch.bool)
        self.vocab_size = vocab_size
        self._cpu_tables = _Tables(special, word_start, random_ids)
        self._device_tables: Dict[torch.device, _Tables] = {}

    @staticmethod
    def _word_start_table(tokenizer, vocab_size: int) -> Tensor:
        """``[V]`` bool: whether each id starts a word, from the vocabulary's subword markers."""
        tokens = [t if isinstance(t, str) else "" for t in tokenizer.convert_ids_to_tokens(list(range(vocab_size)))]
        continuation = [t.startswith(_CONTINUATION_PREFIX) and len(t) > len(_CONTINUATION_PREFIX) for t in tokens]
        starts = [t.startswith(_WORD_START_PREFIXES) for t in tokens]
        n_cont, n_start = sum(continuation), sum(starts)
        if n_cont == 0 and n_start == 0:
            log.warning(
                "model.objectives.mlm.whole_word=true but the vocabulary of %s has no '##' / '\u2581' / '\u0120' "
                "subword markers: every token is treated as a word (token-level masking)",
                type(tokenizer).__name__,
            )
            return torch.ones(vocab_size, dtype=torch.bool)
        if n_cont >= n_start:  # WordPiece: "##x" continues a word
            return ~torch.tensor(continuation, dtype=torch.bool)
        return torch.tensor(starts, dtype=torch.bool)  # SentencePiece / BPE: a marker starts a word

    def _tables(self, device: torch.device) -> _Tables:
        if device.type == "cpu":
            return self._cpu_tables
        tables = self._device_tables.get(device)
        if tables is None:
            tables = _Tables(*(t.to(device) for t in self._cpu_tables))
            self._device_tables[device] = tables
        return tables

    def eligible(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None) -> Tensor:
        """``[B, L]`` bool: positions that may be chosen (attended and not a special token)."""
        eligible = ~self._tables(input_ids.device).special[input_ids.long()]
        if attention_mask is not None:
            eligible = eligible & attention_mask.to(device=input_ids.device).bool()
        return eligible

    def word_starts(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None) -> Tensor:
        """``[B, L]`` bool: eligible positions that start a unit of masking.

        With ``whole_word=False`` every eligible position; with ``whole_word=True`` the first token
        of every word (an eligible token that is a word-start token or follows an ineligible one).
        """
        return self._starts(input_ids.long(), self.eligible(input_ids, attention_mask))

    def _starts(self, ids: Tensor, eligible: Tensor) -> Tensor:
        if not self.whole_word:
            return eligible
        prev_eligible = torch.zeros_like(eligible)
        prev_eligible[:, 1:] = eligible[:, :-1]
        return eligible & (self._tables(ids.device).word_start[ids] | ~prev_eligible)

    def __call__(
        self,
        input_ids: Tensor,
        attention_mask: Optional[Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> MaskedTokens:
        """Masks ``input_ids [B, L]``; returns :class:`MaskedTokens` (``input_ids [B, L]``, ``labels [B, L]``)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [B, L], got shape {tuple(input_ids.shape)}")
        if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.dtype == torch.bool:
            raise ValueError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(input_ids.shape)}"
            )
        device = input_ids.device
        ids = input_ids.long()
        if ids.numel() == 0:
            return MaskedTokens(input_ids.clone(), torch.full_like(ids, IGNORE_INDEX))
        if device.type == "cpu":
            low, high = int(ids.min()), int(ids.max())
            if low < 0 or high >= self.vocab_size:
                raise ValueError(
                    f"input_ids must lie in [0, {self.vocab_size}) (the tokenizer's vocabulary), got [{low}, {high}]"
                )
        tables = self._tables(device)
        shape = ids.shape
        sample_device = generator.device if generator is not None else device

        def uniform() -> Tensor:
            return torch.rand(shape, generator=generator, device=sample_device).to(device)

        eligible = self.eligible(ids, attention_mask)  # [B, L]
        starts = self._starts(ids, eligible)  # [B, L] first position of every unit that can be chosen
        chosen = starts & (uniform() < self.probability)
        if self.at_least_one:
            need = starts.any(dim=1) & ~chosen.any(dim=1)  # [B]
            pick = torch.where(starts, uniform(), -1.0).argmax(dim=1)  # [B] uniform among the units
            forced = torch.zeros_like(chosen)
            forced.scatter_(1, pick[:, None], need[:, None])
            chosen = chosen | forced
        if self.whole_word:  # spread each chosen word start over the word's tokens
            word = starts.long().cumsum(dim=1)  # [B, L] word number (0 before the first word)
            per_word = torch.zeros((shape[0], shape[1] + 1), dtype=torch.long, device=device)
            per_word.scatter_add_(1, word, chosen.long())  # one start per word: 0 or 1
            chosen = per_word.gather(1, word).bool() & eligible

        draw = uniform()
        to_mask = chosen & (draw < self.mask_replace_prob)
        masked = ids.masked_fill(to_mask, self.mask_token_id)
        if self.random_replace_prob > 0:
            to_random = chosen & ~to_mask & (draw < self.mask_replace_prob + self.random_replace_prob)
            pick = torch.randint(tables.random_ids.numel(), shape, generator=generator, device=sample_device)
            masked = torch.where(to_random, tables.random_ids[pick.to(device)], masked)
        labels = ids.masked_fill(~chosen, IGNORE_INDEX)
        return MaskedTokens(masked.to(input_ids.dtype), labels)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(probability={self.probability}, mask_replace_prob={self.mask_replace_prob}, "
            f"random_replace_prob={self.random_replace_prob}, whole_word={self.whole_word}, "
            f"at_least_one={self.at_least_one})"
        )
