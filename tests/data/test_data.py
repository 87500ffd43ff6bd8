import json

import numpy as np
import pytest
import torch

from gsa.data import (
    DataOrder,
    Windows,
    expand_sources,
    iter_documents,
    mqar_accuracy,
    mqar_batch,
    pack_batch,
    prepare_text_data,
    read_mqar_settings,
    token_byte_lengths,
    write_mqar_settings,
)
from gsa.data.cache import TokenizedCorpus
from gsa.errors import InputError

DOCS = [f"Document {i}: " + "the quick brown fox jumps över the lazy dog. " * (1 + i % 5) for i in range(40)]


@pytest.fixture
def corpus_dir(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    for i, doc in enumerate(DOCS[:10]):
        (d / f"{i:02d}.txt").write_text(doc)
    with open(d / "rest.jsonl", "w") as f:
        for doc in DOCS[10:]:
            f.write(json.dumps({"text": doc, "id": 1}) + "\n")
    (d / "ignored.csv").write_text("a,b\n")
    return d


def test_sources_dir_glob_and_jsonl(corpus_dir):
    files = expand_sources(str(corpus_dir))
    assert [f.rsplit("/", 1)[1] for f in files] == [f"{i:02d}.txt" for i in range(10)] + ["rest.jsonl"]
    assert list(iter_documents(str(corpus_dir))) == DOCS
    assert list(iter_documents(str(corpus_dir / "*.txt"))) == DOCS[:10]
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        expand_sources(str(corpus_dir / "nothing-here*"))
    with pytest.raises(InputError, match="body"):
        list(iter_documents(str(corpus_dir / "rest.jsonl"), text_field="body"))


@pytest.mark.parametrize("names, message", [
    (["binary"], r"binary\.txt: not UTF-8 text \(byte 0x80 at offset 128\): binary data is not read as text"),
    (["utf16"], r"utf16\.txt: holds NUL bytes \(offset 1\): binary data or UTF-16"),
    (["empty", "blank"], r"data sources \[.*empty\.txt', '.*blank\.txt'\] hold no text \(every file is empty\)"),
    (["bad_json"], r"bad_json\.jsonl:2: not valid JSON \(Unterminated string starting at: column 10\)"),
    (["not_object"], r"not_object\.jsonl:1: expected a JSON object, got list"),
    (["no_field"], r"no_field\.jsonl:1: no field 'text' \(fields: \['body'\]\)"),
    (["number_field"], r"number_field\.jsonl:1: field 'text' holds int '42', not text"),
    (["binary_line"], r"binary_line\.jsonl:2: not UTF-8 text \(byte 0xff at offset 10\)"),
])
def test_data_that_is_not_text_is_named(tmp_path, names, message):
    from bad_inputs import bad_data_files

    files = bad_data_files(tmp_path)
    with pytest.raises(InputError, match=message):
        list(iter_documents([str(files[n]) for n in names]))
    with pytest.raises(InputError, match=message):  # what the trainer reads through
        prepare_text_data([str(files[n]) for n in names], "byte", cache_dir=tmp_path / "cache", progress=False)


@pytest.mark.parametrize("spec", ["byte", "bpe"])
def test_round_trip_and_split(corpus_dir, tmp_path, spec):
    data = prepare_text_data(str(corpus_dir), spec, vocab_size=300, cache_dir=tmp_path / "cache",
                             heldout_fraction=0.2, progress=False)
    tok, eos = data.tokenizer, data.tokenizer.eos_token_id
    got = []
    for split in (data.train, data.heldout):
        assert split.tokens.dtype == np.uint16
        for i in range(split.num_documents):
            doc = split.document(i)
            assert doc[-1] == eos and eos not in doc[:-1]
            got.append(tok.decode(doc[:-1].tolist()))
    assert sorted(got) == sorted(DOCS)  # every document exactly once, losslessly
    assert 1 <= data.heldout.num_documents < len(DOCS)
    # the cache is reused: same path, no rebuild
    again = prepare_text_data(str(corpus_dir), spec, vocab_size=300, cache_dir=tmp_path / "cache",
                              heldout_fraction=0.2, progress=False)
    assert again.cache_path == data.cache_path
    assert np.array_equal(np.asarray(again.train.tokens), np.asarray(data.train.tokens))


def test_heldout_never_empty(tmp_path):
    (tmp_path / "a.txt").write_text("first document")
    (tmp_path / "b.txt").write_text("second document")
    data = prepare_text_data(str(tmp_path / "*.txt"), "byte", cache_dir=tmp_path / "c", heldout_fraction=0.01,
                             progress=False)
    assert data.train.num_documents == 1 and data.heldout.num_documents == 1


def test_byte_lengths_exact_for_bpe(corpus_dir, tmp_path):
    data = prepare_text_data(str(corpus_dir), "bpe", vocab_size=320, cache_dir=tmp_path / "c", progress=False)
    lengths = token_byte_lengths(data.tokenizer)
    for doc in DOCS[:5]:
        ids = data.tokenizer(doc, add_special_tokens=False)["input_ids"]
        assert sum(lengths[i] for i in ids) == len(doc.encode("utf-8"))


def test_packing_boundaries():
    eos = 9
    # documents of lengths 3, 5, 1, 4 (each ending in EOS), windows of 4
    stream = np.array([1, 2, eos, 3, 4, 5, 6, eos, eos, 7, 8, 1, eos, 2], dtype=np.uint16)
    corpus = TokenizedCorpus(stream, np.array([0, 3, 8, 9, 13]), eos)
    w = Windows(corpus, 4)
    assert len(w) == 3
    plain = pack_batch([w[0], w[1]], eos, documents=False)
    assert plain["input_ids"].shape == (2, 4) and torch.equal(plain["labels"], plain["input_ids"])
    b = pack_batch([w[0], w[1], w[2]], eos, documents=True)
    flat = b["input_ids"][0].tolist()
    assert flat == stream[:12].tolist()
    cu = b["cu_seqlens"].tolist()
    # segments end after every EOS (2, 7, 8) and at window edges (4, 8)
    assert cu == [0, 3, 4, 8, 9, 12]
    assert b["cu_seqlens"].dtype == torch.int32
    labels = b["labels"][0]
    assert all(labels[s] == -100 for s in cu[:-1])
    assert (labels != -100).sum() == 12 - (len(cu) - 1)
    pos = b["position_ids"][0].tolist()
    assert pos == [0, 1, 2, 0, 0, 1, 2, 3, 0, 0, 1, 2]
    for a, e in zip(cu[:-1], cu[1:]):  # no segment contains an EOS before its end
        assert eos not in flat[a : e - 1]


def test_data_order_deterministic_and_complete():
    a, b = DataOrder(10, seed=3), DataOrder(10, seed=3)
    seq = [a[p] for p in range(30)]
    assert seq == [b[p] for p in range(30)]
    for e in range(3):
        assert sorted(seq[10 * e : 10 * e + 10]) == list(range(10))
    assert seq[:10] != seq[10:20]  # reshuffled each epoch
    assert [DataOrder(10, seed=4)[p] for p in range(10)] != seq[:10]


@pytest.mark.parametrize("T,D", [(64, 4), (64, 16), (512, 64), (1024, 256)])
def test_mqar_properties(T, D):
    b = mqar_batch(32, T, D, seed=7)
    ids, labels = b["input_ids"], b["labels"]
    assert ids.shape == labels.shape == (32, T)
    assert torch.equal(mqar_batch(32, T, D, seed=7)["input_ids"], ids)
    assert not torch.equal(mqar_batch(32, T, D, seed=8)["input_ids"], ids)
    V = 8192
    for n in range(32):
        keys, vals = ids[n, 0 : 2 * D : 2], ids[n, 1 : 2 * D : 2]
        assert len(set(keys.tolist())) == D and keys.min() >= 1 and keys.max() < V // 2
        assert vals.min() >= V // 2 and vals.max() < V
        kv = dict(zip(keys.tolist(), vals.tolist()))
        qpos = (labels[n] != -100).nonzero().squeeze(1) - 1
        assert len(qpos) == D and qpos.min() >= 2 * D and (qpos % 2 == 0).all()
        queried = ids[n, qpos].tolist()
        assert sorted(queried) == sorted(keys.tolist())  # every key queried exactly once
        assert all(labels[n, p + 1] == kv[k] == ids[n, p + 1] for p, k in zip(qpos.tolist(), queried))
        rest = torch.ones(T, dtype=torch.bool)
        rest[: 2 * D] = False
        rest[qpos] = False
        rest[qpos + 1] = False
        assert (ids[n, rest] == 0).all()


def test_mqar_settings_round_trip_and_refuse_a_bad_file(tmp_path):
    assert read_mqar_settings(tmp_path) is None  # no file: not trained on MQAR by gsa
    path = write_mqar_settings(tmp_path, 4096, 0.5, False, True)
    assert path == tmp_path / "mqar.json"
    assert read_mqar_settings(tmp_path) == {"vocab_size": 4096, "alpha": 0.5, "query_values": False, "random_fill": True}
    for bad in ('{"vocab_size": 4096}', "not json", '{"vocab_size": "x", "alpha": 0, "query_values": true, "random_fill": false}',
                '{"vocab_size": 64, "alpha": 0, "query_values": "false", "random_fill": false}'):
        path.write_text(bad)
        with pytest.raises(ValueError, match="mqar.json: not a valid MQAR settings file"):
            read_mqar_settings(tmp_path)


@pytest.mark.parametrize("query_values,random_fill", [(False, False), (True, True), (False, True)])
def test_mqar_zoology_format_options(query_values, random_fill):
    """query_values=False leaves filler after each query key (the value only in the labels), random_fill puts
    uniform tokens in every filler position; keys, values, query positions and labels are the default format's."""
    T, D, V = 256, 16, 8192
    base = mqar_batch(64, T, D, seed=3)
    b = mqar_batch(64, T, D, seed=3, query_values=query_values, random_fill=random_fill)
    assert torch.equal(b["labels"], base["labels"])
    ids, ref = b["input_ids"], base["input_ids"]
    qpos = (b["labels"] != -100).nonzero(as_tuple=True)
    ans = (qpos[0], qpos[1])
    keypos = (qpos[0], qpos[1] - 1)
    assert torch.equal(ids[:, : 2 * D], ref[:, : 2 * D]) and torch.equal(ids[keypos], ref[keypos])
    filler = torch.ones(64, T, dtype=torch.bool)
    filler[:, : 2 * D] = False
    filler[keypos] = False
    if query_values:
        assert torch.equal(ids[ans], ref[ans])
        filler[ans] = False
    if random_fill:
        fill = ids[filler]
        assert fill.min() >= 0 and fill.max() < V and (fill == 0).float().mean() < 0.01
        assert fill.unique().numel() > 0.5 * min(fill.numel(), V)  # spread over the vocabulary
    else:
        assert (ids[filler] == 0).all()
    assert torch.equal(mqar_batch(64, T, D, seed=3, query_values=query_values, random_fill=random_fill)["input_ids"],
                       ids)


@pytest.mark.parametrize("count,n", [(3, 5), (3, 4), (4, 64), (12, 64)])
def test_mqar_distinct_keys_uniform(count, n):
    """Both samplers (rejection while count**2 <= 2n, sorted scores past it) draw every ordered tuple of distinct
    keys equally often: each tuple's count within 5 standard deviations of its expectation."""
    from collections import Counter
    from math import perm

    from gsa.data.mqar import _distinct_keys

    rows = 60 * perm(n, count) if n < 10 else 20000
    k = _distinct_keys(np.random.default_rng(1), rows, count, n)
    assert k.shape == (rows, count) and k.min() >= 0 and k.max() < n
    assert all(len(set(r)) == count for r in k.tolist())
    if n < 10:
        seen = Counter(map(tuple, k.tolist()))
        p = 1 / perm(n, count)
        assert len(seen) == perm(n, count)
        assert max(abs(c - rows * p) for c in seen.values()) < 5 * (rows * p * (1 - p)) ** 0.5
    else:  # each key in each position about equally often
        freq = np.stack([np.bincount(k[:, j], minlength=n) for j in range(count)])
        assert np.abs(freq - rows / n).max() < 5 * (rows / n) ** 0.5


def test_mqar_power_law_favours_short_distances():
    b = mqar_batch(512, 1024, 8, seed=0)
    qpos = (b["labels"] != -100).nonzero()[:, 1] - 1 - 16
    slots = (1024 - 16) // 2
    assert (qpos // 2 < slots // 4).float().mean() > 0.4  # uniform would give 0.25


def test_mqar_accuracy_and_errors():
    b = mqar_batch(4, 64, 8, seed=0)
    logits = torch.nn.functional.one_hot(torch.roll(b["input_ids"], -1, 1), 8192).float()
    assert mqar_accuracy(logits, b["labels"]) == (32, 32)
    with pytest.raises(ValueError, match="seq_len >= 4"):
        mqar_batch(1, 64, 17)


def test_local_hf_tokenizer_directory(corpus_dir, tmp_path):
    from gsa.data import byte_tokenizer

    tok_dir = tmp_path / "tok"
    byte_tokenizer().save_pretrained(tok_dir)
    data = prepare_text_data(str(corpus_dir), str(tok_dir), cache_dir=tmp_path / "c", progress=False)
    assert len(data.tokenizer) == 257 and data.tokenizer.eos_token_id == 256
    assert data.tokenizer.decode(data.train.document(0)[:-1].tolist()) in DOCS
    with pytest.raises(FileNotFoundError, match="neither"):
        prepare_text_data(str(corpus_dir), str(tmp_path / "missing"), cache_dir=tmp_path / "c", progress=False)
