"""How well does a co-trained model read its own training pairs, and tuxpaint's Tamil nouns?

Training pairs (``--languages ta,fr,...``): per language, 300 of its training pairs (drawn with
a fixed seed); each text_b retrieves its text_a among the 300's distinct text_a: R@1 and the
median rank. Then, for each Tamil caption of the form "ஒரு NOUN" ("a NOUN") whose NOUN is
exactly the Tamil side of a training pair, three ranks (0 = first):

- the pair: NOUN among the English sides of every Tamil training pair (was the pair learnt?);
- English: the pair's English word among tuxpaint's English captions, against the stamp's own
  ("rooster" -> "A colorful rooster."; the English side's sentence form, no translation);
- Tamil: NOUN among the same English captions (the translation without the article).

    python scripts/probe_pairs.py runs/multilingual_cotrain_ui_bf16_3400_spaces4/model \
        --languages fr,de,ru,ko,am,ta

Reads data/tuxpaint (``clippo data tuxpaint``) and the training pairs of
data/textpairs/multi_ui1500 (docs/multilingual.md has the commands that build both).
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections import defaultdict

import torch

import clippo
from clippo.data.captionsets import read_caption_set
from clippo.data.textpairs import read_text_pair_set
from clippo.eval.retrieval import retrieval_ranks
from clippo.eval.sets import encode_texts

ARTICLE = "ஒரு "


def training_pairs(pattern: str) -> dict[str, list[tuple[str, str]]]:
    """Per language, the (text_a, text_b) pairs in the shards of ``pattern``, in shard order."""
    data = read_text_pair_set(pattern)
    out = defaultdict(list)
    for query, target, lang in zip(data.queries, data.targets, data.languages, strict=True):
        out[lang].append((data.pivots[target], query))
    return out


def rank(query: torch.Tensor, targets: torch.Tensor, gold: list[int]) -> int:
    """How many targets score strictly above the best of ``gold``: unlike ``retrieval_ranks``
    (which counts ties against), a stamp whose caption is the same string does not count."""
    scores = targets @ query
    return int((scores > scores[gold].max()).sum())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("model")
    p.add_argument("--tuxpaint", default="data/tuxpaint")
    p.add_argument("--pairs", default="data/textpairs/multi_ui1500/train-*.tar")
    p.add_argument("--languages", default="", help="comma-separated: training-pair recall")
    args = p.parse_args()
    torch.set_num_threads(2)
    model = clippo.from_pretrained(args.model).eval()

    def encode(texts: list[str]) -> torch.Tensor:  # unit rows: encode_text normalises
        with torch.no_grad():
            return encode_texts(model, texts)

    by_language = training_pairs(args.pairs)
    for lang in filter(None, args.languages.split(",")):
        sample = random.Random(0).sample(by_language[lang], min(300, len(by_language[lang])))
        targets = list(dict.fromkeys(a for a, _ in sample))
        gold = torch.tensor([targets.index(a) for a, _ in sample])
        queries, candidates = encode([b for _, b in sample]), encode(targets)
        ranks = retrieval_ranks(queries, candidates, gold, torch.arange(len(targets))).tolist()
        print(
            f"{lang}: training pairs b2a R@1 {100 * sum(r == 0 for r in ranks) / len(ranks):.1f}%"
            f", median rank {statistics.median(ranks):g} among {len(targets)}"
        )
    pairs = {b: a for a, b in by_language["ta"]}
    english_sides = list(dict.fromkeys(pairs.values()))
    captions = read_caption_set(args.tuxpaint).captions
    english = [(i, c["en"][0]) for i, c in enumerate(captions) if "en" in c]
    rows = [i for i, _ in english]
    caption_emb, side_emb = encode([t for _, t in english]), encode(english_sides)
    found = []
    for i, c in enumerate(captions):
        noun = c.get("ta", [""])[0].strip().rstrip(".").strip()
        if "en" in c and noun.startswith(ARTICLE) and noun[len(ARTICLE) :] in pairs:
            found.append((i, noun[len(ARTICLE) :]))
    print(f"{len(found)} Tamil captions whose noun is a training pair's text_b; ranks among "
          f"{len(english_sides)} English sides and {len(english)} English captions")  # fmt: skip
    print("noun | English word | pair | English word -> caption | noun -> caption")
    for i, noun in found:
        word = pairs[noun]
        gold = [rows.index(i)]
        noun_emb, word_emb = encode([noun])[0], encode([word])[0]
        print(
            f"{noun} | {word} | {rank(noun_emb, side_emb, [english_sides.index(word)])} | "
            f"{rank(word_emb, caption_emb, gold)} | {rank(noun_emb, caption_emb, gold)}"
        )


if __name__ == "__main__":
    main()
