"""Draws a few test composites (what the fine-tuned model reads) with the predicted and the true
answer under each, for the README.

    python scripts/vqa_examples.py --model runs/vqa_demo_fused/lr_0.03/model \
        --data data/easy_vqa --predictions runs/vqa_demo_fused/predictions.json \
        --out docs/img/vqa_examples.png
"""

import argparse
import json

import numpy as np
from PIL import Image, ImageDraw

from clippo.data.shards import expand_urls, iter_tar_samples
from clippo.data.transforms import load_image
from clippo.data.vqa import split_pattern
from clippo.models import from_pretrained
from clippo.render import UnifontRenderer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--predictions", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--count", type=int, default=8)
    p.add_argument("--scale", type=int, default=2)
    args = p.parse_args()
    cfg = from_pretrained(args.model).cfg
    renderer = UnifontRenderer(**cfg.render)
    predicted = {r["question_id"]: r["answer"] for r in json.loads(open(args.predictions).read())}
    tiles, shown = [], set()
    for sample in iter_tar_samples(expand_urls(split_pattern(args.data, "test"))[0]):
        meta = json.loads(sample["json"])
        if meta["image_id"] in shown:  # one question per image: the sheet shows 8 images
            continue
        shown.add(meta["image_id"])
        image = load_image(sample.get("png") or sample["jpg"])
        canvas = renderer.render_question_on_image(
            image, meta["question"], image_size=cfg.image_size, max_lines=cfg.max_lines
        )
        size = cfg.image_size * args.scale
        tile = Image.new("RGB", (size + 8, size + 40), "white")
        tile.paste(Image.fromarray(canvas).resize((size, size), Image.NEAREST), (4, 4))
        guess, truth = predicted[meta["question_id"]], meta["answers"][0]
        colour = (0, 130, 0) if guess == truth else (200, 0, 0)
        draw = ImageDraw.Draw(tile)
        draw.text((4, size + 8), f"predicted: {guess}", fill=colour)
        draw.text((4, size + 22), f"true: {truth}", fill="black")
        tiles.append(np.asarray(tile))
        if len(tiles) == args.count:
            break
    Image.fromarray(np.concatenate(tiles, axis=1)).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
