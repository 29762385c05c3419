"""The ``clippo`` command line: parses arguments, loads configs, calls library functions, prints."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

CONFIG_DIR = Path(__file__).parent / "configs"


def resolve_config(name_or_path: str) -> Path:
    """A config by file path, or by name from the packaged recipes (``clippo_b16_yfcc``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    packaged = CONFIG_DIR / f"{name_or_path.removesuffix('.yaml')}.yaml"
    if packaged.is_file():
        return packaged
    known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    raise FileNotFoundError(f"no config file {name_or_path!r}; packaged configs: {known}")


def _print_table(rows: dict[str, float], title: str) -> None:
    width = max(len(k) for k in rows)
    print(f"\n{title}")
    print("-" * (width + 12))
    for k, v in rows.items():
        print(f"{k:<{width}}  {v:>9.4f}" if isinstance(v, float) else f"{k:<{width}}  {v!s:>9}")


def _progress_bar(total: int, initial: int):
    from tqdm import tqdm

    bar = tqdm(total=total, initial=initial, desc="train", dynamic_ncols=True)

    def on_step(step: int, metrics: dict | None) -> None:
        bar.update(step - bar.n)
        if metrics:
            bar.set_postfix(
                loss=f"{metrics['train/loss']:.3f}",
                lr=f"{metrics['train/lr']:.2e}",
                T=f"{metrics['train/temperature']:.1f}",
                ex_s=f"{metrics['train/examples_per_s']:.0f}",
            )

    return bar, on_step


def cmd_train(args: argparse.Namespace) -> int:
    from clippo.eval.suite import make_eval_fn
    from clippo.train.checkpoint import list_checkpoints
    from clippo.train.config import load_config
    from clippo.train.loop import train

    cfg = load_config(resolve_config(args.config), args.set)
    workdir = Path(args.workdir)
    done = list_checkpoints(workdir / "checkpoints")
    start = done[-1][0] if (args.resume and done) else 0
    bar, on_step = _progress_bar(cfg.train.total_steps, start)
    try:
        results = train(cfg, workdir, resume=args.resume, on_step=on_step, eval_fn=make_eval_fn(cfg))
    finally:
        bar.close()
    _print_table({k: v for k, v in results.items() if not k.startswith("train/")}, "evaluation")
    print(f"\nmodel written to {workdir / 'model'}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from clippo.eval.suite import evaluate
    from clippo.models import from_pretrained
    from clippo.train.config import load_config

    cfg = load_config(resolve_config(args.config) if args.config else None, args.set)
    model = from_pretrained(args.model)
    results = evaluate(model, cfg)
    _print_table(results, f"evaluation of {args.model}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


def cmd_data_openclipart(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from clippo.data.openclipart import build_openclipart_shards

    with tqdm(desc="openclipart", unit="img") as bar:
        stats = build_openclipart_shards(
            args.out,
            val_size=args.val_size,
            seed=args.seed,
            image_size=args.image_size,
            progress=lambda n=1: bar.update(n),
        )
    print(json.dumps({k: v for k, v in stats.items() if k != "shards"}, indent=2))
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from clippo.render import render_to_png

    render_to_png(args.text, args.out, image_size=args.image_size, show_grid=args.show_grid)
    print(f"wrote {args.out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from clippo.demo import run_demo

    return run_demo(args.workdir, data_dir=args.data, overrides=args.set)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    p = argparse.ArgumentParser(prog="clippo", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="build openclipart shards, train a small CLIPPO, evaluate")
    d.add_argument("--workdir", default="runs/demo")
    d.add_argument("--data", default="data/openclipart", help="where the shards are built")
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("train", help="train from a YAML config (file path or packaged name)")
    t.add_argument("config")
    t.add_argument("--workdir", required=True)
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a saved model on the config's validation data")
    e.add_argument("--model", required=True, help="a from_pretrained directory")
    e.add_argument("--config", default=None)
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    e.add_argument("--out", default=None, help="write the metrics as JSON here")
    e.set_defaults(func=cmd_eval)

    data = sub.add_parser("data", help="build data sets").add_subparsers(dest="source", required=True)
    oc = data.add_parser("openclipart", help="train/val shards from Debian's openclipart")
    oc.add_argument("--out", required=True)
    oc.add_argument("--val-size", type=int, default=1000)
    oc.add_argument("--seed", type=int, default=0)
    oc.add_argument("--image-size", type=int, default=256)
    oc.set_defaults(func=cmd_data_openclipart)

    r = sub.add_parser("render", help="render text as the model sees it")
    r.add_argument("text")
    r.add_argument("-o", "--out", required=True)
    r.add_argument("--image-size", type=int, default=224)
    r.add_argument("--show-grid", action="store_true", help="draw the 16x16 patch grid")
    r.set_defaults(func=cmd_render)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``clippo`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"clippo {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
