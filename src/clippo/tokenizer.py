"""Text -> token ids: a SentencePiece model read into fixed-length id arrays (numpy only).

``Tokenizer`` does what big_vision's ``tokenize(max_len, eos="sticky", pad_value=1)`` op does
for its contrastive text towers: lower-case, encode, append EOS, cut to ``max_len`` keeping the
final EOS, and pad with EOS, so the last position always holds an EOS token (``last`` pooling
reads it). ``train_tokenizer`` builds such a model from alt-texts, as the CLIPPO paper built its
WebLI vocabulary; an existing model (T5's ``cc_all.32000``, mT5's) loads just the same.
SentencePiece is the ``tokenizers`` extra: this module imports without it, and using it without
the extra says what to install.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clippo.extras import require

if TYPE_CHECKING:
    import sentencepiece as spm

# T5's layout: pad 0, EOS 1, unknown 2, no BOS. Models trained here use it too.
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2


class Tokenizer:
    """A SentencePiece model producing ``(max_len,)`` int32 id arrays; picklable.

    ``tokenizer("a cat")`` -> ``(max_len,)``; ``tokenizer(["a", "b"])`` -> ``(2, max_len)``.
    """

    def __init__(self, model_file: str | os.PathLike, max_len: int = 196, lower: bool = True):
        path = Path(model_file)
        if not path.is_file():
            raise FileNotFoundError(
                f"tokenizer model {path} not found; train one with "
                "`clippo tokenizer train --shards PATTERN --vocab-size N --out FILE.model`"
            )
        if max_len < 1:
            raise ValueError(f"max_len must be positive, got {max_len}")
        self.model_file, self.max_len, self.lower = str(path), max_len, lower
        self._proto = path.read_bytes()
        self._sp: spm.SentencePieceProcessor | None = None
        if self.processor.eos_id() < 0:
            raise ValueError(f"{path}: the SentencePiece model has no EOS token")

    @property
    def processor(self) -> spm.SentencePieceProcessor:
        """The SentencePiece processor (rebuilt from the model bytes after unpickling)."""
        if self._sp is None:
            spm = require("sentencepiece", "a SentencePiece tokenizer")
            self._sp = spm.SentencePieceProcessor(model_proto=self._proto)
        return self._sp

    @property
    def vocab_size(self) -> int:
        """Number of pieces; every id is below it."""
        return self.processor.get_piece_size()

    @property
    def eos_id(self) -> int:
        """The EOS id, also used for padding."""
        return self.processor.eos_id()

    def pieces(self, text: str) -> list[int]:
        """One string -> its piece ids, uncut and without EOS (lower-cased if ``lower``)."""
        return self.processor.encode(text.lower() if self.lower else text)

    def encode(self, text: str) -> np.ndarray:
        """One string -> ``(max_len,)`` int32: pieces, EOS, cut keeping the EOS, EOS padding."""
        ids = self.pieces(text)[: self.max_len - 1] + [self.eos_id]
        out = np.full(self.max_len, self.eos_id, dtype=np.int32)
        out[: len(ids)] = ids
        return out

    def __call__(self, texts: str | Iterable[str]) -> np.ndarray:
        if isinstance(texts, str):
            return self.encode(texts)
        rows = [self.encode(t) for t in texts]
        return np.stack(rows) if rows else np.zeros((0, self.max_len), np.int32)

    def decode(self, ids: Iterable[int]) -> str:
        """Ids back to text, stopping at the first EOS."""
        ids = [int(i) for i in ids]
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        return self.processor.decode(ids)

    def __getstate__(self) -> dict:
        # SentencePieceProcessor is a C++ object: workers rebuild it from the model bytes.
        return {**self.__dict__, "_sp": None}

    def __repr__(self) -> str:
        return f"Tokenizer({self.model_file!r}, max_len={self.max_len}, lower={self.lower})"


def train_tokenizer(
    texts: Iterable[str],
    out: str | os.PathLike,
    vocab_size: int = 32_000,
    *,
    lower: bool = True,
    model_type: str = "unigram",
    character_coverage: float = 0.9995,
    max_sentences: int = 10_000_000,
) -> Path:
    """Trains a SentencePiece model on ``texts`` (T5's id layout) and writes it to ``out``.

    Raises ValueError with a smaller size to try when the texts cannot fill ``vocab_size``.
    """
    spm = require("sentencepiece", "training a tokenizer")
    sentences = [t.lower() if lower else t for t in texts if t and t.strip()]
    if not sentences:
        raise ValueError("no texts to train a tokenizer on")
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            input_sentence_size=max_sentences,
            shuffle_input_sentence=True,
            pad_id=PAD_ID,
            eos_id=EOS_ID,
            unk_id=UNK_ID,
            bos_id=-1,
            minloglevel=2,
        )
    except RuntimeError as e:
        limit = re.search(r"<=\s*(\d+)", str(e))
        if "too high" in str(e) or limit:
            size = f"at most {limit.group(1)}" if limit else "a smaller one"
            raise ValueError(
                f"{len(sentences)} texts are too few for a {vocab_size}-piece vocabulary: "
                f"pass a vocabulary size of {size} (about 2000 for the openclipart shards)"
            ) from None
        raise
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_bytes(model.getvalue())
    tmp.replace(out)
    return out
