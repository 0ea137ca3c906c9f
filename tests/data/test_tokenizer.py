"""Tokenizers: offline WordPiece for the shapes grammar, save/reload, loud failures."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
from transformers import AutoTokenizer, BertTokenizerFast  # noqa: E402

from mmresearch.data.shapes.captions import object_phrases  # noqa: E402
from mmresearch.data.shapes.dataset import ShapesDataset  # noqa: E402
from mmresearch.data.shapes.vocabulary import (  # noqa: E402
    ALL_COLOURS,
    ALL_SHAPES,
    ALL_SIZES,
    CAPTION_TEMPLATES,
    REGION_PHRASES,
    ShapesVocab,
)
from mmresearch.data.tokenizer import (  # noqa: E402
    build_shapes_tokenizer,
    build_wordpiece_tokenizer,
    check_tokenizer,
    load_pretrained_tokenizer,
)


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("shapes_tok")
    build_shapes_tokenizer(save_dir=path)
    return path


@pytest.fixture(scope="module")
def tok(shapes_dir):
    return AutoTokenizer.from_pretrained(str(shapes_dir))


def test_roundtrip_through_save_pretrained(tmp_path):
    corpus = ["a small red circle above a big blue box", "how many objects are there?"] * 3
    built = build_wordpiece_tokenizer(corpus, tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    reloaded = AutoTokenizer.from_pretrained(str(tmp_path))
    text = "A small red circle, above a box?"
    assert built(text)["input_ids"] == reloaded(text)["input_ids"]
    ids = reloaded(text)["input_ids"]
    assert reloaded.convert_ids_to_tokens(ids) == ["[CLS]", "a", "small", "red", "circle", ",", "above", "a", "box", "?", "[SEP]"]
    assert [reloaded.convert_tokens_to_ids(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [0, 1, 2, 3, 4]
    assert reloaded.pad_token_id == 0 and reloaded.mask_token == "[MASK]"
    assert len(reloaded) == len(built) > 60  # specials + alphabet (+ ## pieces) + words
    assert reloaded.decode(ids, skip_special_tokens=True) == "a small red circle, above a box?"


def test_shapes_tokenizer_covers_the_grammar(tok):
    assert 200 < len(tok) < 2000
    check_tokenizer(tok, ["a small red circle in the center"], min_vocab_size=200, max_unk_fraction=0.0, source="shapes")
    vocab = ShapesVocab(shapes=ALL_SHAPES, colours=ALL_COLOURS)
    ds = ShapesDataset(150, seed=2, vocab=vocab)
    texts = [c for cs in ds.captions for c in cs] + ds.neg_captions + [q for qs in ds.questions for q in qs]
    texts += list(ds.answer_vocab) + list(ds.class_names["count"])
    unk = tok.unk_token_id
    for ids in tok(texts, add_special_tokens=False)["input_ids"]:
        assert unk not in ids
        assert not any(t.startswith("##") for t in tok.convert_ids_to_tokens(ids))  # whole words


def test_longest_caption_fits_in_32_tokens(tok):
    """Worst case: every template with its longest prefix, three longest object phrases, longest region."""
    phrases = sorted({p for s in ALL_SHAPES for c in ALL_COLOURS for z in ALL_SIZES for p in object_phrases(s, c, z)})
    lengths = [len(ids) for ids in tok(phrases, add_special_tokens=False)["input_ids"]]
    longest_phrase = phrases[lengths.index(max(lengths))]
    assert max(lengths) == 6  # e.g. "one little plus sign in turquoise"
    longest_region = max((p for ps in REGION_PHRASES.values() for p in ps), key=lambda p: len(p.split()))
    texts = []
    for templates in CAPTION_TEMPLATES.values():
        for template in templates:
            text = template.text.format(longest_phrase, longest_phrase, longest_phrase, r=longest_region)
            texts.append(("a picture of " if template.prefixable else "") + text)
    assert max(len(ids) for ids in tok(texts)["input_ids"]) <= 32


def test_shapes_tokenizer_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MMRESEARCH_CACHE_DIR", str(tmp_path))
    first = build_shapes_tokenizer()
    entries = list((tmp_path / "tokenizers").iterdir())
    assert len(entries) == 1 and entries[0].name.startswith("shapes-wordpiece-")
    assert (entries[0] / "tokenizer.json").is_file()
    second = build_shapes_tokenizer()
    assert second.get_vocab() == first.get_vocab()
    assert len(list((tmp_path / "tokenizers").iterdir())) == 1  # no temp leftovers


def test_check_tokenizer_fails_loudly_on_a_placeholder_vocab():
    tiny = BertTokenizerFast()  # what a failed offline hub load looks like: 5 special tokens
    assert len(tiny) == 5
    with pytest.raises(ValueError, match=r"'bert-base-uncased'.*only 5 tokens"):
        check_tokenizer(tiny, ["a red circle"], min_vocab_size=1000, source="bert-base-uncased")


def test_check_tokenizer_fails_on_mostly_unknown_probes(tmp_path):
    tok = build_wordpiece_tokenizer(["red circle"] * 5, tmp_path, alphabet=[])
    with pytest.raises(ValueError, match=r"'tiny-corpus' \(vocab size \d+\) maps \d+% .*\[UNK\]"):
        check_tokenizer(tok, ["the quick brown fox jumps"], min_vocab_size=1, source="tiny-corpus")
    assert check_tokenizer(tok, ["red circle"], min_vocab_size=1, source="tiny-corpus") is tok


def test_load_pretrained_tokenizer(shapes_dir):
    tok = load_pretrained_tokenizer(str(shapes_dir), min_vocab_size=200, probe_texts=["a big green box"])
    assert tok("a big green box")["input_ids"][0] == tok.cls_token_id
    with pytest.raises(ValueError, match=r"at least 1000"):
        load_pretrained_tokenizer(str(shapes_dir))  # the default guards against small vocabularies
    with pytest.raises(ValueError, match="mmresearch-tests/no-such-tokenizer"):
        load_pretrained_tokenizer("mmresearch-tests/no-such-tokenizer")
