"""Runs the configured evaluators on shard data: embeds once, then retrieval, zero-shot, few-shot.

The evaluators themselves (``retrieval``, ``zeroshot``, ``fewshot``) take embeddings or an
embedding function; this module only produces the embeddings from a model and a shard set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from clippo.data import ImageTransform, ShardDataset
from clippo.eval.fewshot import fewshot_lsr
from clippo.eval.retrieval import retrieval_metrics
from clippo.eval.zeroshot import build_zeroshot_classifier, load_prompts, zeroshot_accuracy


@dataclass
class EmbeddedSet:
    """Embeddings of a shard set: one row per image, one row per caption."""

    image: torch.Tensor  # (N, D)
    text: torch.Tensor  # (M, D)
    text_image_ids: torch.Tensor  # (M,) row of ``image`` each caption belongs to
    labels: torch.Tensor  # (N,) -1 where a shard has no label
    texts: list[str]
    keys: list[str]


def _loader(pattern: str, model, batch_size: int, text_sampling: str, workers: int) -> DataLoader:
    dataset = ShardDataset(
        pattern,
        batch_size=batch_size,
        image_transform=ImageTransform(model.image_size, train=False),
        text_transform=None,
        train=False,
        text_sampling=text_sampling,
    )
    return DataLoader(dataset, batch_size=None, num_workers=workers)


@torch.no_grad()
def embed_shards(
    model,
    pattern: str,
    *,
    batch_size: int = 256,
    max_examples: int | None = None,
    with_texts: bool = True,
    captions: str = "all",
    workers: int = 0,
) -> EmbeddedSet:
    """Embeds every image of ``pattern`` and, with ``with_texts``, its captions: every text
    field (``captions="all"``) or the first one (``"first"``, one image/text pair each)."""
    device = next(model.parameters()).device
    images, texts, ids, labels, keys = [], [], [], [], []
    n = 0
    for batch in _loader(pattern, model, batch_size, "first", workers):
        images.append(model.encode_image(batch["image"].to(device)).float().cpu())
        labels.append(batch["label"])
        keys.extend(batch["key"])
        if with_texts:
            for i, fields in enumerate(batch["texts"]):
                fields = fields if captions == "all" else fields[:1]
                texts.extend(fields)
                ids.extend([n + i] * len(fields))
        n += len(batch["key"])
        if max_examples is not None and n >= max_examples:
            break
    if not images:
        raise ValueError(f"no examples found in {pattern!r}")
    text_emb = torch.zeros(0, images[0].shape[1])
    if texts:
        text_emb = torch.cat(
            [
                model.encode_text(texts[i : i + batch_size]).float().cpu()
                for i in range(0, len(texts), batch_size)
            ]
        )
    image = torch.cat(images)
    label = torch.cat(labels).long()
    if max_examples is not None:
        image, label, keys = image[:max_examples], label[:max_examples], keys[:max_examples]
        keep = [j for j, i in enumerate(ids) if i < max_examples]
        text_emb, texts, ids = text_emb[keep], [texts[j] for j in keep], [ids[j] for j in keep]
    return EmbeddedSet(image, text_emb, torch.tensor(ids, dtype=torch.long), label, texts, keys)


@torch.no_grad()
def evaluate(model, cfg, *, val: EmbeddedSet | None = None) -> dict[str, float]:
    """All evaluations that ``cfg.eval`` asks for, on ``cfg.data.val`` (and train, for few-shot)."""
    if not cfg.data.val:
        raise ValueError("evaluation needs data.val: a shard pattern of held-out examples")
    was_training = model.training
    model.eval()
    ev = cfg.eval
    val = val or embed_shards(model, cfg.data.val, batch_size=ev.batch_size, captions=ev.captions)
    out: dict[str, float] = {}
    if ev.retrieval:
        out.update(retrieval_metrics(val.image, val.text, val.text_image_ids, ks=(1, 5, 10)))
    labelled = val.labels >= 0
    if ev.zeroshot and labelled.any():
        classnames, templates = load_prompts(ev.zeroshot)
        classifier = build_zeroshot_classifier(
            lambda t: model.encode_text(t).float().cpu(), classnames, templates, ev.batch_size
        )
        topk = (1, 5) if len(classnames) >= 5 else (1,)
        acc = zeroshot_accuracy(val.image[labelled], val.labels[labelled], classifier, topk=topk)
        out.update({f"zeroshot_{k}": v for k, v in acc.items()})
    if ev.fewshot_shots and labelled.any() and cfg.data.train:
        train = embed_shards(
            model,
            cfg.data.train,
            batch_size=ev.batch_size,
            max_examples=ev.fewshot_train_examples,
            with_texts=False,
        )
        num_classes = int(max(train.labels.max(), val.labels.max())) + 1
        for shots in ev.fewshot_shots:
            out[f"fewshot_{shots}shot"] = fewshot_lsr(
                train.image,
                train.labels,
                val.image[labelled],
                val.labels[labelled],
                shots=shots,
                num_classes=num_classes,
            )
    model.train(was_training)
    return out


def make_eval_fn(cfg) -> Callable | None:
    """``eval_fn(model, step)`` for the training loop, or None when there is no validation data."""
    if not cfg.data.val:
        return None
    return lambda model, step: evaluate(model, cfg)
