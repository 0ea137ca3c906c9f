"""MLM masking: rates, the 80/10/10 split, what is never touched, whole words, and agreement with
transformers' DataCollatorForLanguageModeling (statistically: it uses its own random draws)."""

import logging
import random

import pytest
import torch

from mmresearch.data.tokenizer import build_shapes_tokenizer
from mmresearch.modules.masking import IGNORE_INDEX, MLMMasker
from mmresearch.utils.errors import ConfigError

# Grammar words (one WordPiece token each) and words the shapes tokenizer splits into "##" pieces.
SINGLE = ["a", "small", "red", "circle", "to", "the", "left", "of", "large", "blue", "square", "above", "star"]
MULTI = ["pentagon", "octagon", "zigzag", "checkered", "dotted", "ellipse", "heart", "teal", "elephant"]


@pytest.fixture(scope="module")
def tok():
    return build_shapes_tokenizer()


def sentences(n, seed=0, length=(4, 14)):
    rng = random.Random(seed)
    return [" ".join(rng.choice(SINGLE + MULTI) for _ in range(rng.randint(*length))) for _ in range(n)]


def random_batch(tok, rows, length, seed=0, min_len=3):
    """``[CLS] w ... w [SEP] [PAD] ...`` with uniformly random non-special ids and random lengths."""
    g = torch.Generator().manual_seed(seed)
    special = torch.tensor(sorted(set(tok.all_special_ids)))
    pool = torch.tensor([i for i in range(len(tok)) if i not in set(special.tolist())])
    ids = pool[torch.randint(len(pool), (rows, length), generator=g)]
    lengths = torch.randint(min_len, length + 1, (rows,), generator=g)  # incl. [CLS] and [SEP]
    pos = torch.arange(length)[None, :]
    ids[:, 0] = tok.cls_token_id
    ids[pos == (lengths[:, None] - 1)] = tok.sep_token_id
    ids[pos >= lengths[:, None]] = tok.pad_token_id
    attention = (pos < lengths[:, None]).long()
    return ids, attention


def is_special(tok, ids):
    return torch.isin(ids, torch.tensor(tok.all_special_ids))


def test_rate_split_labels_and_untouched_positions(tok):
    ids, attention = random_batch(tok, rows=1900, length=128, seed=1, min_len=100)
    original = ids.clone()
    out = MLMMasker(tok)(ids, attention, generator=torch.Generator().manual_seed(0))
    eligible = (attention == 1) & ~is_special(tok, ids)
    chosen = out.labels != IGNORE_INDEX
    assert eligible.sum() > 200_000
    # ~15% of the eligible tokens, nothing else (rows have >= 98 eligible tokens: the
    # at-least-one rule adds < 1e-8 to the rate)
    assert not (chosen & ~eligible).any()
    assert abs(chosen.sum().item() / eligible.sum().item() - 0.15) < 0.01
    # labels: the original id at chosen positions, -100 elsewhere
    assert torch.equal(out.labels[chosen], original[chosen])
    assert (out.labels[~chosen] == IGNORE_INDEX).all()
    assert out.labels.dtype == torch.long
    # the input is not modified; unchosen positions (special tokens, padding) are unchanged
    assert torch.equal(ids, original)
    assert torch.equal(out.input_ids[~chosen], original[~chosen])
    # 80% [MASK], 10% a random non-special token, 10% unchanged
    new = out.input_ids[chosen]
    mask_frac = (new == tok.mask_token_id).float().mean().item()
    same_frac = (new == original[chosen]).float().mean().item()
    assert abs(mask_frac - 0.8) < 0.01
    assert abs(same_frac - 0.1) < 0.01  # (+0.1 / 307: a random id equal to the original)
    assert abs(1 - mask_frac - same_frac - 0.1) < 0.01
    replaced = (new != tok.mask_token_id) & (new != original[chosen])
    assert not is_special(tok, new[replaced]).any()
    # the random ids cover the non-special vocabulary
    assert new[replaced].unique().numel() > 0.9 * (len(tok) - len(set(tok.all_special_ids)))


def test_custom_replacement_split(tok):
    ids, attention = random_batch(tok, rows=400, length=128, seed=2, min_len=100)
    out = MLMMasker(tok, probability=0.5, mask_replace_prob=0.5, random_replace_prob=0.4)(
        ids, attention, generator=torch.Generator().manual_seed(1)
    )
    chosen = out.chosen
    new, old = out.input_ids[chosen], ids[chosen]
    assert abs(chosen.sum().item() / ((attention == 1) & ~is_special(tok, ids)).sum().item() - 0.5) < 0.01
    assert abs((new == tok.mask_token_id).float().mean().item() - 0.5) < 0.01
    assert abs((new == old).float().mean().item() - 0.1) < 0.01
    # only [MASK], nothing unchanged / random
    only_mask = MLMMasker(tok, probability=0.3, mask_replace_prob=1.0, random_replace_prob=0.0)(ids, attention)
    assert (only_mask.input_ids[only_mask.chosen] == tok.mask_token_id).all()
    # nothing replaced: the input is returned unchanged, only labels are set
    keep = MLMMasker(tok, probability=0.3, mask_replace_prob=0.0, random_replace_prob=0.0)(ids, attention)
    assert torch.equal(keep.input_ids, ids) and keep.chosen.any()


def test_padding_and_special_tokens_are_never_chosen(tok):
    texts = sentences(64, seed=3)
    enc = tok(texts, padding=True, return_tensors="pt")
    ids = enc["input_ids"].clone()
    ids[5, 3] = tok.unk_token_id  # an [UNK] and a [MASK] inside the text
    ids[6, 2] = tok.mask_token_id
    attention = enc["attention_mask"].clone()
    attention[7, 2:] = 0  # real (non-pad) ids behind attention_mask == 0
    special = is_special(tok, ids)
    masker = MLMMasker(tok, probability=1.0)  # every eligible token chosen
    for seed in range(5):
        out = masker(ids, attention, generator=torch.Generator().manual_seed(seed))
        untouched = special | (attention == 0)
        assert (out.labels[untouched] == IGNORE_INDEX).all()
        assert torch.equal(out.input_ids[untouched], ids[untouched])
        assert out.chosen.sum() == (~untouched).sum()


def test_at_least_one_token_per_sequence(tok):
    # rows with 4 eligible tokens ([CLS] w w w w [SEP] [PAD]...), plus rows with no eligible token
    ids, attention = random_batch(tok, rows=20_000, length=8, seed=4, min_len=6)
    ids[:, 6:], attention[:, 6:] = tok.pad_token_id, 0
    ids[:, 5] = tok.sep_token_id
    ids[:3, 1:5], attention[3:6, :] = tok.unk_token_id, 0  # 6 rows without any eligible token
    g = torch.Generator().manual_seed(5)
    out = MLMMasker(tok, probability=0.15)(ids, attention, generator=g)
    per_row = out.chosen.sum(dim=1)
    assert (per_row[6:] >= 1).all() and (per_row[:6] == 0).all()
    assert torch.equal(out.input_ids[:6], ids[:6])
    # expected rate with the rule: p + (1 - p)**n / n = 0.15 + 0.85**4 / 4 = 0.2805 for n = 4
    rate = per_row[6:].sum().item() / (4 * (20_000 - 6))
    assert abs(rate - (0.15 + 0.85**4 / 4)) < 0.006
    # the forced token is uniform over the eligible positions
    forced = MLMMasker(tok, probability=1e-9)(ids, attention, generator=g)
    assert (forced.chosen.sum(dim=1)[6:] == 1).all()
    where = forced.chosen[6:, 1:5].float().mean(dim=0)
    assert ((where - 0.25).abs() < 0.01).all(), where
    # without the rule: the plain Bernoulli rate, and some rows get nothing
    plain = MLMMasker(tok, probability=0.15, at_least_one=False)(ids, attention, generator=g)
    assert abs(plain.chosen[6:].float().sum().item() / (4 * (20_000 - 6)) - 0.15) < 0.006
    assert (plain.chosen[6:].sum(dim=1) == 0).float().mean().item() == pytest.approx(0.85**4, abs=0.01)


def test_whole_words_are_masked_all_or_nothing(tok):
    enc = tok(sentences(1000, seed=6), padding=True, return_tensors="pt")
    ids, attention = enc["input_ids"], enc["attention_mask"]
    masker = MLMMasker(tok, whole_word=True)
    out = masker(ids, attention, generator=torch.Generator().manual_seed(6))
    eligible = (attention == 1) & ~is_special(tok, ids)
    # words, independently of the masker: a "##" token right after an eligible one continues a word
    continuation = torch.tensor([t.startswith("##") for t in tok.convert_ids_to_tokens(list(range(len(tok))))])[ids]
    link = torch.zeros_like(eligible)  # position i continues the word of position i - 1
    link[:, 1:] = continuation[:, 1:] & eligible[:, 1:] & eligible[:, :-1]
    word_start = eligible & ~link
    assert torch.equal(masker.word_starts(ids, attention), word_start)
    chosen = out.chosen
    assert link.sum() > 5000  # plenty of multi-piece words
    # all or nothing: a continuation token is chosen exactly when the token before it is
    assert torch.equal(chosen[:, 1:][link[:, 1:]], chosen[:, :-1][link[:, 1:]])
    assert not chosen[~eligible].any()
    assert torch.equal(out.labels[chosen], ids[chosen])
    # at least one word per sequence; ~15% of the words, plus the at-least-one rule:
    # expected chosen words of a sequence with n words: n p + (1 - p)**n
    words = word_start.sum(dim=1)
    chosen_words = (chosen & word_start).sum(dim=1)
    assert (chosen_words >= 1).all()
    expected = (0.15 * words + 0.85 ** words.double()).sum().item()
    assert abs(chosen_words.sum().item() - expected) / words.sum().item() < 0.01
    # 80/10/10 per token, also inside a word: chosen words with [MASK] and non-[MASK] tokens
    is_mask = out.input_ids == tok.mask_token_id
    assert abs(is_mask[chosen].float().mean().item() - 0.8) < 0.02
    mixed_links = link[:, 1:] & chosen[:, 1:] & (is_mask[:, 1:] != is_mask[:, :-1])
    assert mixed_links.sum() > 100


def test_whole_word_with_a_handmade_wordpiece_vocabulary():
    from transformers import BertTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "un", "##believ", "##able", "##s", "."]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)})
    enc = tok(["the unbelievable cats sat.", "cats"], padding=True, return_tensors="pt")
    # [CLS] the un ##believ ##able cat ##s sat . [SEP] / [CLS] cat ##s [SEP] [PAD] ...
    masker = MLMMasker(tok, whole_word=True, probability=0.5)
    starts = masker.word_starts(enc["input_ids"], enc["attention_mask"])
    assert starts[0].nonzero().flatten().tolist() == [1, 2, 5, 7, 8]  # the, un.., cat##s, sat, "."
    assert starts[1].nonzero().flatten().tolist() == [1]
    for seed in range(50):
        chosen = masker(enc["input_ids"], enc["attention_mask"], generator=torch.Generator().manual_seed(seed)).chosen
        for word in ([2, 3, 4], [5, 6]):
            assert chosen[0, word].all() or not chosen[0, word].any()
        assert chosen[1, 1:3].all() and not chosen[1, [0, 3, 4]].any()  # the only word: always chosen


class StubTokenizer:
    """The part of the tokenizer interface MLMMasker uses, for a SentencePiece / BPE style vocabulary."""

    def __init__(self, tokens, special=("<pad>", "<s>", "</s>", "<mask>", "<unk>"), mask="<mask>"):
        self.tokens = list(tokens)
        self.all_special_ids = [self.tokens.index(t) for t in special]
        self.mask_token_id = self.tokens.index(mask) if mask else None

    def __len__(self):
        return len(self.tokens)

    def convert_ids_to_tokens(self, ids):
        return [self.tokens[i] for i in ids]

    def encode(self, pieces):
        return torch.tensor([[self.tokens.index(p) for p in pieces]])


@pytest.mark.parametrize("marker", ["\u2581", "\u0120"])  # SentencePiece, byte-level BPE
def test_word_start_markers(marker):
    m = marker
    tok = StubTokenizer(["<pad>", "<s>", "</s>", "<mask>", "<unk>", "the", f"{m}the", f"{m}un", "believ", "able", f"{m}cat", "s", f"{m}sat", "."])
    # RoBERTa style: the first word has no marker; "sat." is one word (no marker before ".")
    ids = tok.encode(["<s>", "the", f"{m}un", "believ", "able", f"{m}cat", "s", "<unk>", "s", f"{m}sat", ".", "</s>", "<pad>"])
    masker = MLMMasker(tok, whole_word=True, probability=0.5, random_replace_prob=0.0, mask_replace_prob=1.0)
    starts = masker.word_starts(ids)
    assert starts[0].nonzero().flatten().tolist() == [1, 2, 5, 8, 9]  # "s" after <unk> starts a word
    for seed in range(30):
        out = masker(ids, generator=torch.Generator().manual_seed(seed))
        for word in ([2, 3, 4], [5, 6], [9, 10]):
            assert out.chosen[0, word].all() or not out.chosen[0, word].any()
        assert (out.input_ids[out.chosen] == tok.mask_token_id).all()
        assert not out.chosen[0, [0, 7, 11, 12]].any()


def test_vocabulary_without_subword_markers_masks_tokens(caplog):
    tok = StubTokenizer(["<pad>", "<s>", "</s>", "<mask>", "<unk>", "a", "b", "c"])
    with caplog.at_level(logging.WARNING, logger="mmresearch.modules.masking"):
        masker = MLMMasker(tok, whole_word=True)
    assert "subword markers" in caplog.text
    ids = tok.encode(["<s>", "a", "b", "c", "</s>"])
    assert masker.word_starts(ids)[0].tolist() == [False, True, True, True, False]


def test_seeded_generator_is_deterministic_and_input_dtype_is_kept(tok):
    ids, attention = random_batch(tok, rows=32, length=40, seed=7)
    for whole_word in (False, True):
        masker = MLMMasker(tok, whole_word=whole_word)
        a = masker(ids, attention, generator=torch.Generator().manual_seed(3))
        b = masker(ids, attention, generator=torch.Generator().manual_seed(3))
        c = masker(ids, attention, generator=torch.Generator().manual_seed(4))
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)
        assert not torch.equal(a.labels, c.labels)
    small = MLMMasker(tok)(ids.int(), attention.bool(), generator=torch.Generator().manual_seed(3))
    assert small.input_ids.dtype == torch.int32 and small.labels.dtype == torch.long
    ref = MLMMasker(tok)(ids, attention, generator=torch.Generator().manual_seed(3))
    assert torch.equal(small.input_ids.long(), ref.input_ids) and torch.equal(small.labels, ref.labels)
    empty = MLMMasker(tok)(ids[:0], attention[:0])
    assert empty.input_ids.shape == (0, 40) and empty.labels.shape == (0, 40)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_matches_cpu_with_a_cpu_generator(tok):
    ids, attention = random_batch(tok, rows=64, length=40, seed=8)
    masker = MLMMasker(tok, whole_word=True)
    cpu = masker(ids, attention, generator=torch.Generator().manual_seed(0))
    gpu = masker(ids.cuda(), attention.cuda(), generator=torch.Generator().manual_seed(0))
    assert gpu.input_ids.is_cuda
    assert torch.equal(cpu.input_ids, gpu.input_ids.cpu()) and torch.equal(cpu.labels, gpu.labels.cpu())
    assert masker(ids.cuda(), attention.cuda()).labels.is_cuda  # global CUDA RNG


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"probability": 0.0}, r"model\.objectives\.mlm\.probability must be in \(0, 1\]"),
        ({"probability": 1.5}, r"model\.objectives\.mlm\.probability"),
        ({"probability": "0.15"}, r"model\.objectives\.mlm\.probability must be a number"),
        ({"probability": True}, r"model\.objectives\.mlm\.probability"),
        ({"mask_replace_prob": -0.1}, r"model\.objectives\.mlm\.mask_replace_prob must be in \[0, 1\]"),
        ({"random_replace_prob": 1.1}, r"model\.objectives\.mlm\.random_replace_prob"),
        ({"mask_replace_prob": 0.8, "random_replace_prob": 0.3}, r"mask_replace_prob \+ model\.objectives\.mlm\.random_replace_prob must be <= 1"),
        ({"whole_word": "yes"}, r"model\.objectives\.mlm\.whole_word"),
        ({"at_least_one": 1}, r"model\.objectives\.mlm\.at_least_one"),
    ],
)
def test_bad_arguments_name_the_key(tok, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        MLMMasker(tok, **kwargs)
    assert issubclass(ConfigError, ValueError)


def test_tokenizer_without_mask_token_and_bad_inputs(tok):
    with pytest.raises(ValueError, match=r"model\.mlm needs a tokenizer with a mask token"):
        MLMMasker(StubTokenizer(["<pad>", "<s>", "</s>", "<unk>", "a"], special=("<pad>", "<s>", "</s>", "<unk>"), mask=None))
    MLMMasker(tok, mask_replace_prob=0.2, random_replace_prob=0.8)  # sums to 1 exactly: fine
    masker = MLMMasker(tok)
    ids, attention = random_batch(tok, rows=2, length=10)
    with pytest.raises(ValueError, match=r"\[B, L\]"):
        masker(ids[0], attention[0])
    with pytest.raises(ValueError, match="integer"):
        masker(ids.float(), attention)
    with pytest.raises(ValueError, match="attention_mask shape"):
        masker(ids, attention[:, :5])
    with pytest.raises(ValueError, match=r"must lie in \[0, 312\)"):
        masker(ids + 1000, attention)


def test_rates_match_transformers_collator(tok):
    from transformers import DataCollatorForLanguageModeling

    ids, attention = random_batch(tok, rows=1700, length=128, seed=9, min_len=100)
    special = is_special(tok, ids)
    collator = DataCollatorForLanguageModeling(tok, mlm_probability=0.15, seed=0)
    collator.create_rng()
    hf_ids, hf_labels = collator.torch_mask_tokens(ids.clone(), special_tokens_mask=special.long())
    ours = MLMMasker(tok, at_least_one=False)(ids, attention, generator=torch.Generator().manual_seed(0))

    def rates(new, labels):
        chosen = labels != IGNORE_INDEX
        n = chosen.sum().item()
        return (
            n / (~special).sum().item(),
            (new[chosen] == tok.mask_token_id).sum().item() / n,
            (new[chosen] == ids[chosen]).sum().item() / n,
        )

    for hf, mine in zip(rates(hf_ids, hf_labels), rates(ours.input_ids, ours.labels)):
        assert abs(hf - mine) < 0.01, (rates(hf_ids, hf_labels), rates(ours.input_ids, ours.labels))
    assert not (hf_labels != IGNORE_INDEX)[special].any()


def test_whole_word_rates_match_transformers_collator(tok):
    from transformers import DataCollatorForLanguageModeling

    # no punctuation: transformers' words (from character offsets) and ours ("##") coincide
    enc = tok(sentences(2000, seed=10), padding=True, return_tensors="pt", return_offsets_mapping=True, return_special_tokens_mask=True)
    ids, attention = enc["input_ids"], enc["attention_mask"]
    special = enc["special_tokens_mask"]
    _, hf_not_start = DataCollatorForLanguageModeling._calc_word_ids_and_prob_mask(enc["offset_mapping"].numpy(), special.numpy())
    masker = MLMMasker(tok, whole_word=True, at_least_one=False, mask_replace_prob=1.0, random_replace_prob=0.0)
    starts = masker.word_starts(ids, attention)
    assert torch.equal(starts, torch.from_numpy(~hf_not_start) & (special == 0))

    collator = DataCollatorForLanguageModeling(
        tok, mlm_probability=0.15, whole_word_mask=True, mask_replace_prob=1.0, random_replace_prob=0.0, seed=0
    )
    collator.create_rng()
    hf_ids, hf_labels = collator.torch_mask_tokens(ids.clone(), special_tokens_mask=special, offset_mapping=enc["offset_mapping"])
    ours = masker(ids, attention, generator=torch.Generator().manual_seed(0))
    eligible = special == 0
    for labels in (hf_labels, ours.labels):
        assert not (labels != IGNORE_INDEX)[~eligible].any()
    token_rate = [((lab != IGNORE_INDEX) & eligible).sum().item() / eligible.sum().item() for lab in (hf_labels, ours.labels)]
    word_rate = [((lab != IGNORE_INDEX) & starts).sum().item() / starts.sum().item() for lab in (hf_labels, ours.labels)]
    assert abs(word_rate[0] - word_rate[1]) < 0.015 and abs(word_rate[1] - 0.15) < 0.01, word_rate
    assert abs(token_rate[0] - token_rate[1]) < 0.015, token_rate
    assert (hf_ids[hf_labels != IGNORE_INDEX] == tok.mask_token_id).all()
