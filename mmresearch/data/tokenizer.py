"""Tokenizers: an offline WordPiece tokenizer for the shapes grammar, and loading real ones safely.

Every tokenizer handed to a data module is a ``transformers`` tokenizer (``PreTrainedTokenizerBase``)
that pads and adds ``[CLS]``/``[SEP]``, so models do not care whether it was trained here or loaded
from a checkpoint directory.

Pitfall this module guards against: transformers 5.x, asked offline for a hub name it cannot
fetch, may return a placeholder tokenizer with ~5 tokens instead of failing, and everything then
tokenizes to ``[UNK]``. :func:`check_tokenizer` fails loudly on such tokenizers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Optional, Sequence

log = logging.getLogger(__name__)

SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
#: Characters always in the vocabulary, so unseen words split into pieces instead of ``[UNK]``.
DEFAULT_ALPHABET: tuple[str, ...] = tuple("abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"-()/&+")
#: Bump when the way the shapes tokenizer is built changes (invalidates the cache).
_SHAPES_TOKENIZER_VERSION = 1

DEFAULT_PROBE_TEXTS: tuple[str, ...] = (
    "a small red circle to the left of a large blue square",
    "a photo of a dog sitting on a green chair next to the window",
    "how many objects are there?",
)


def build_wordpiece_tokenizer(
    corpus: Iterable[str],
    save_dir: str | os.PathLike,
    vocab_size: int = 2000,
    min_frequency: int = 1,
    lowercase: bool = True,
    model_max_length: int = 512,
    alphabet: Sequence[str] = DEFAULT_ALPHABET,
):
    """Trains a BERT-style WordPiece tokenizer on ``corpus`` and saves it as a pretrained tokenizer.

    BERT normaliser and pre-tokenizer, special tokens ``[PAD] [UNK] [CLS] [SEP] [MASK]`` (ids 0-4),
    ``[CLS] ... [SEP]`` post-processing. The result is wrapped as ``BertTokenizerFast``, written with
    ``save_pretrained(save_dir)`` and returned as reloaded by ``AutoTokenizer.from_pretrained``, so
    it behaves exactly like any tokenizer loaded from a directory.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import AutoTokenizer, BertTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, lowercase=lowercase, strip_accents=None)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=list(alphabet),
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.BertProcessing(("[SEP]", sep_id), ("[CLS]", cls_id))
    wrapped = BertTokenizerFast(
        tokenizer_object=tok,
        do_lower_case=lowercase,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        model_max_length=model_max_length,
    )
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(str(save_dir))
    return AutoTokenizer.from_pretrained(str(save_dir))


def shapes_corpus() -> list[str]:
    """Texts covering every word the shapes caption/question grammar can produce (all shapes and
    colours, not only a dataset's selection)."""
    from mmresearch.data.shapes.vocabulary import iter_grammar_texts

    return list(iter_grammar_texts())


def _cache_root() -> Path:
    root = os.environ.get("MMRESEARCH_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "mmresearch"


def build_shapes_tokenizer(save_dir: Optional[str | os.PathLike] = None, vocab_size: int = 2000):
    """The WordPiece tokenizer of the shapes grammar.

    With ``save_dir=None`` it is cached under ``$MMRESEARCH_CACHE_DIR`` (default
    ``~/.cache/mmresearch``) in ``tokenizers/shapes-wordpiece-<hash>``, the hash covering the grammar
    and the build settings, so a grammar change builds a new one. The cache is written atomically
    (safe with several processes). An explicit ``save_dir`` is always (re)built.
    """
    from transformers import AutoTokenizer

    corpus = shapes_corpus()
    if save_dir is not None:
        return build_wordpiece_tokenizer(corpus, save_dir, vocab_size=vocab_size)
    payload = json.dumps({"corpus": sorted(set(corpus)), "vocab_size": vocab_size, "v": _SHAPES_TOKENIZER_VERSION})
    digest = hashlib.sha256(payload.encode()).hexdigest()[:16]
    target = _cache_root() / "tokenizers" / f"shapes-wordpiece-{digest}"
    if (target / "tokenizer.json").is_file():
        try:
            return AutoTokenizer.from_pretrained(str(target))
        except Exception as err:  # a corrupt cache entry: rebuild it
            log.warning("rebuilding the cached shapes tokenizer at %s (%s)", target, err)
            shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        tokenizer = build_wordpiece_tokenizer(corpus, tmp, vocab_size=vocab_size)
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race; use its copy
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if (target / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(str(target))
    return tokenizer


def check_tokenizer(
    tokenizer,
    probe_texts: Sequence[str] = DEFAULT_PROBE_TEXTS,
    min_vocab_size: int = 1000,
    max_unk_fraction: float = 0.05,
    source: str = "<unknown>",
):
    """Fails loudly (``ValueError`` naming ``source`` and the vocab size) on a broken tokenizer.

    Broken means: fewer than ``min_vocab_size`` tokens, no padding token, or more than
    ``max_unk_fraction`` of the probe texts' tokens are the unknown token. Returns the tokenizer.
    """
    vocab_size = len(tokenizer)
    hint = (
        "transformers returns a tiny placeholder tokenizer when a hub name cannot be loaded "
        "(e.g. offline with HF_HUB_OFFLINE=1 and nothing cached); point it to a local directory "
        "holding the tokenizer files, or use the built-in shapes tokenizer"
    )
    if vocab_size < min_vocab_size:
        raise ValueError(
            f"tokenizer from {source!r} has a vocabulary of only {vocab_size} tokens "
            f"(expected at least {min_vocab_size}); {hint}"
        )
    if tokenizer.pad_token_id is None:
        raise ValueError(f"tokenizer from {source!r} (vocab size {vocab_size}) has no padding token")
    unk_id = tokenizer.unk_token_id
    if unk_id is not None and probe_texts:
        ids = [i for text in probe_texts for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
        unk_fraction = sum(i == unk_id for i in ids) / max(len(ids), 1)
        if unk_fraction > max_unk_fraction:
            raise ValueError(
                f"tokenizer from {source!r} (vocab size {vocab_size}) maps {unk_fraction:.0%} of the probe "
                f"texts' tokens to {tokenizer.unk_token!r} (allowed: {max_unk_fraction:.0%}); {hint}"
            )
    return tokenizer


def load_pretrained_tokenizer(
    name_or_path: str,
    min_vocab_size: int = 1000,
    probe_texts: Sequence[str] = DEFAULT_PROBE_TEXTS,
    max_unk_fraction: float = 0.05,
    **kwargs,
):
    """``AutoTokenizer.from_pretrained(name_or_path)`` plus :func:`check_tokenizer`.

    A tokenizer without a padding token gets its end-of-sequence token as padding (GPT-2 style).
    """
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    except Exception as err:
        raise ValueError(f"could not load a tokenizer from {name_or_path!r}: {err}") from err
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return check_tokenizer(tokenizer, probe_texts, min_vocab_size, max_unk_fraction, source=name_or_path)
