#!/usr/bin/env python3
# tests/tools/check_synth_tokenizer.py — manual oracle for formats/synth_tokenizer: loads a
# tokenizer.json written by make_synth_tokenizer with Hugging Face tokenizers, checks that
# decode(encode(s)) == s for ASCII, unicode, numbers and whitespace runs, that bos is prepended,
# and prints the ids. With --expect-512 (file made with max_vocab=512) it also asserts the ids
# recorded in tests/synth_tokenizer_test.cc. With --compare-trainer it trains tokenizers' own
# BpeTrainer on the text embedded in formats/synth_tokenizer.cc (ByteLevel alphabet, min_frequency
# 2, the same number of tokens) and checks that it learns the same merges and vocab.
#
#   pip install tokenizers==0.20.3
#   MOETOOL_SYNTH_TOKENIZER_DIR=/tmp/tok ./build/tests/moetool_tests --gtest_filter='SynthTokenizer.WritesFiles'
#   python3 tests/tools/check_synth_tokenizer.py /tmp/tok/tokenizer.json --expect-512
import argparse
import json
import os
import re
import sys

from tokenizers import Tokenizer

SAMPLES = [
    "The river town of Aldermere.",
    "héllo wörld — 日本",
    "In 1624, 38 families\n\n  left.",
    "Hello, world! It's 2024-05-14 and we'll meet at 9:30.",
    "numbers: 0 1 12 123 1234 12345 3.14159 -42 1e10",
    "   leading and trailing spaces   ",
    "tabs\tand\nnew\n\n\nlines \t \n mixed",
    "emoji 🙂 and accents: café, naïve, Ångström, Ελληνικά, русский",
    "",
    " ",
    "\x00\x01 control \x7f bytes",
]

# Ids Hugging Face tokenizers 0.20.3 gave for SAMPLES[:3] at max_vocab = 512 (bos first).
EXPECTED_512 = {
    "The river town of Aldermere.": [510, 299, 316, 314, 274, 489, 13],
    "héllo wörld — 日本": [510, 71, 127, 102, 277, 78, 260, 127, 114, 81, 289, 220, 158, 222, 242, 220, 162,
                         245, 98, 162, 250, 105],
    "In 1624, 38 families\n\n  left.": [510, 40, 77, 329, 21, 429, 11, 220, 18, 23, 271, 64, 76, 335, 72, 291,
                                        198, 198, 220, 460, 499, 13],
}


def training_text() -> str:
    src_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "formats", "synth_tokenizer.cc")
    with open(src_path, encoding="utf-8") as f:
        src = f.read()
    body = src.split("constexpr std::string_view kTrainingText =", 1)[1].split(";\n", 1)[0]
    parts = re.findall(r'"((?:[^"\\]|\\.)*)"', body)
    return "".join(p.encode("ascii").decode("unicode_escape") for p in parts)


def compare_trainer(raw: dict) -> bool:
    from tokenizers import models, pre_tokenizers, trainers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    ref = Tokenizer(models.BPE())
    ref.pre_tokenizer = byte_level
    n = len(raw["model"]["vocab"]) - 2
    trainer = trainers.BpeTrainer(vocab_size=n, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    ref.train_from_iterator([training_text()], trainer=trainer)
    rj = json.loads(ref.to_str())
    ref_merges = [m if isinstance(m, str) else " ".join(m) for m in rj["model"]["merges"]]
    mine = {k: v for k, v in raw["model"]["vocab"].items() if v < n}
    good = ref_merges == raw["model"]["merges"] and rj["model"]["vocab"] == mine
    print(f"{'ok  ' if good else 'FAIL'} tokenizers' BpeTrainer learns the same {len(ref_merges)} merges and vocab")
    return good


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("tokenizer_json")
    ap.add_argument("--expect-512", action="store_true", help="assert the ids recorded for max_vocab=512")
    ap.add_argument("--compare-trainer", action="store_true", help="compare with tokenizers' BpeTrainer")
    args = ap.parse_args()

    tok = Tokenizer.from_file(args.tokenizer_json)
    with open(args.tokenizer_json, encoding="utf-8") as f:
        raw = json.load(f)
    size = tok.get_vocab_size(with_added_tokens=True)
    bos = tok.token_to_id("<|begin_of_text|>")
    eos = tok.token_to_id("<|end_of_text|>")
    print(f"vocab size {size}, bos {bos}, eos {eos}, merges {len(raw['model']['merges'])}")
    ok = bos == size - 2 and eos == size - 1
    if not ok:
        print("FAIL: bos/eos are not the last two ids")

    for s in SAMPLES:
        enc = tok.encode(s)
        ids = enc.ids
        back = tok.decode(ids, skip_special_tokens=True)
        good = back == s and ids[:1] == [bos] and bos not in ids[1:]
        plain = tok.encode(s, add_special_tokens=False).ids
        good = good and plain == ids[1:] and tok.decode(plain) == s
        print(f"{'ok  ' if good else 'FAIL'} {s!r} -> {ids}")
        if not good:
            print(f"     decoded {back!r}")
        ok = ok and good
        if args.expect_512 and s in EXPECTED_512 and EXPECTED_512[s] != ids:
            print(f"FAIL: expected {EXPECTED_512[s]}")
            ok = False

    # Special tokens are recognised in text, and decode to themselves.
    ids = tok.encode("<|begin_of_text|>hi<|end_of_text|>", add_special_tokens=False).ids
    good = ids[0] == bos and ids[-1] == eos
    print(f"{'ok  ' if good else 'FAIL'} special tokens in text -> {ids}")
    ok = ok and good

    if args.compare_trainer:
        ok = compare_trainer(raw) and ok

    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
