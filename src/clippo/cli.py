"""The ``clippo`` command line: parses arguments, loads configs, calls library functions, prints."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from clippo.extras import MissingExtraError, require


def _print_table(rows: dict[str, float], title: str) -> None:
    if not rows:
        print(f"\n{title}: nothing to show")
        return
    width = max(len(k) for k in rows)
    print(f"\n{title}")
    print("-" * (width + 12))
    for k, v in rows.items():
        print(f"{k:<{width}}  {v:>9.4f}" if isinstance(v, float) else f"{k:<{width}}  {v!s:>9}")


def _print_skips(report: dict[str, dict[str, int]], where: str) -> None:
    """One line per skip reason: how many samples and in which shards."""
    for reason, shards in sorted(report.items()):
        files = ", ".join(
            f"{name} {n}" for name, n in sorted(shards.items(), key=lambda x: -x[1])[:5]
        )
        more = f", ... ({len(shards)} shards)" if len(shards) > 5 else ""
        print(f"{where}: skipped {sum(shards.values())} samples, {reason} ({files}{more})")


class _TrainBar:
    """The training progress bar, drawn from the first finished step on (an error before it
    prints no stray "0%" line); under torchrun only rank 0 draws it."""

    def __init__(self, total: int, initial: int):
        self.total, self.initial, self.bar = total, initial, None
        self.quiet = os.environ.get("RANK", "0") != "0"

    def on_step(self, step: int, metrics: dict | None) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.total,
                initial=self.initial,
                desc="train",
                dynamic_ncols=True,
                disable=self.quiet,
            )
        self.bar.update(step - self.bar.n)
        if metrics:
            shown = {"loss": "train/loss", "lr": "train/lr", "T": "train/temperature"}
            post = {k: f"{metrics[m]:.3g}" for k, m in shown.items() if m in metrics}
            post["ex_s"] = f"{metrics['train/examples_per_s']:.0f}"
            self.bar.set_postfix(post)

    @property
    def n(self) -> int:
        """The last step reached (the run's first step until one finishes)."""
        return self.bar.n if self.bar is not None else self.initial

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _progress_bar(total: int, initial: int) -> tuple[_TrainBar, object]:
    bar = _TrainBar(total, initial)
    return bar, bar.on_step


def _interrupted(step: int, workdir: Path, how: str) -> int:
    """Says where Ctrl-C stopped a training run and how to go on; returns SIGINT's exit status."""
    from clippo.train.checkpoint import list_checkpoints

    done = list_checkpoints(workdir / "checkpoints")
    # A resume continues from the last checkpoint, which may lie before the step reached.
    if not done:
        where = " (no checkpoint yet: it starts from step 0)"
    elif done[-1][0] != step:
        where = f" (from the last checkpoint, step {done[-1][0]})"
    else:
        where = ""
    if os.environ.get("RANK", "0") == "0":
        print(f"\ninterrupted at step {step}; {how}{where}", file=sys.stderr)
    return 130


def cmd_train(args: argparse.Namespace) -> int:
    from clippo.atomic import atomic_write_text
    from clippo.jobs.pretrain import train
    from clippo.train.checkpoint import list_checkpoints
    from clippo.train.config import load_config, resolve_config

    cfg = load_config(resolve_config(args.config), args.set)
    workdir = Path(args.workdir)
    done = list_checkpoints(workdir / "checkpoints")
    start = done[-1][0] if (args.resume and done) else 0
    if cfg.data.text_pairs_per_batch:
        print(_describe_text_pairs(cfg))
    bar, on_step = _progress_bar(cfg.effective_total_steps, start)
    try:
        results = train(cfg, workdir, resume=args.resume, on_step=on_step)
    except KeyboardInterrupt:
        bar.close()
        return _interrupted(bar.n, workdir, "resume with --resume")
    finally:
        bar.close()
    if os.environ.get("RANK", "0") == "0":  # the other ranks hold no evaluation results
        final = {k: v for k, v in results.items() if not k.startswith("train/")}
        if final:  # as `clippo demo`: the final evaluation, also the last eval row of metrics.jsonl
            _print_table(final, "evaluation")
            atomic_write_text(workdir / "metrics.json", json.dumps(final, indent=2) + "\n")
        if (workdir / "skipped.json").is_file():
            _print_skips(json.loads((workdir / "skipped.json").read_text()), "training")
        print(f"\nmodel written to {workdir / 'model'}")
    return 0


def _describe_text_pairs(cfg) -> str:
    pairs, batch = cfg.data.text_pairs_per_batch, cfg.data.batch_size
    line = f"co-training: {pairs} text pairs + {batch - pairs} image pairs per batch of {batch}"
    if cfg.train.keep_image_pairs_constant:
        line += (
            f"; {cfg.effective_total_steps} steps (train.total_steps {cfg.train.total_steps} "
            f"x {batch}/{batch - pairs}, keep_image_pairs_constant)"
        )
    return line


def cmd_eval(args: argparse.Namespace) -> int:
    from clippo.jobs.pretrain import build_eval_sets
    from clippo.models import from_pretrained
    from clippo.train.config import load_config, resolve_config

    if args.model is None:  # not required by argparse: `clippo eval multilingual` has its own
        raise ValueError("--model is required: a from_pretrained directory")
    if args.bench:
        if args.config is not None or args.set:
            raise ValueError(
                "--benchmark runs the benchmarks' own evaluators: drop --config/--set, or list "
                "the benchmarks as eval.sets.NAME: {kind: KIND, data: PATH} in the config"
            )
        return _eval_benchmarks(args)
    config = args.config
    if config is None:  # the run that wrote the model: WORKDIR/model -> WORKDIR/config.yaml
        run_config = Path(args.model).parent / "config.yaml"
        if not run_config.is_file():
            raise FileNotFoundError(
                f"{run_config} not found (the model's own run config): pass --config"
            )
        config = run_config
        print(f"evaluating with the run's config {run_config}")
    cfg = load_config(resolve_config(config), args.set)
    sets = build_eval_sets(cfg)
    if not sets:
        raise ValueError("no evaluation sets: give a config with eval.sets, or --set eval.sets...")
    results = sets.run(from_pretrained(args.model))
    _print_table(results, f"evaluation of {args.model}")
    for name, report in sets.skipped().items():
        _print_skips(report, f"evaluation set {name}")
    if args.out:
        from clippo.atomic import atomic_write_text

        atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")
    return 0


def _parse_benchmarks(specs: list[str]) -> dict[str, str]:
    from clippo.eval.benchmarks import BENCHMARKS

    out: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not path or name not in BENCHMARKS:
            known = "\n".join(f"  {k}=PATH  {v}" for k, v in BENCHMARKS.items())
            raise ValueError(f"--benchmark {spec!r}: expected NAME=PATH, one of\n{known}")
        if name in out:
            raise ValueError(
                f"--benchmark {name} given twice; to run two sets of one kind, list them in a "
                "config (eval.sets.NAME: {kind: ..., data: ...}) and pass --config"
            )
        out[name] = path
    return out


def _progress_factory():
    """``EvalSets.run``'s progress callback: one tqdm bar per embedding pass."""
    from tqdm import tqdm

    bars = []

    def start(description: str, total: int | None):
        if bars:
            bars[-1].close()
        bars.append(tqdm(total=total, desc=description, unit="img", dynamic_ncols=True))
        return bars[-1].update

    def close() -> None:
        for bar in bars:
            bar.close()

    return start, close


def _eval_benchmarks(args: argparse.Namespace) -> int:
    import torch

    from clippo.atomic import atomic_write_text
    from clippo.eval.benchmarks import (
        benchmark_kind,
        default_evaluators,
        nest_metrics,
        other_metrics_table,
        paper_table,
        typographic_table,
    )
    from clippo.eval.plots import plot_typographic_examples
    from clippo.eval.sets import EvalSets
    from clippo.models import from_pretrained
    from clippo.train.config import EvalSetConfig

    specs = _parse_benchmarks(args.bench)
    sets = EvalSets(
        {
            name: EvalSetConfig(
                data=path,
                kind=benchmark_kind(name),
                evaluators=default_evaluators(
                    name, path, typographic=args.typographic, fonts=args.fonts
                ),
            )
            for name, path in specs.items()
        },
        batch_size=args.batch_size,
        workers=args.workers,
        cache_dir=None if args.no_cache else args.cache_dir,
    )
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = from_pretrained(args.model).to(device)
    model_dir = Path(args.model).resolve()
    label = model_dir.parent.name if model_dir.name == "model" else model_dir.name
    print(f"evaluating {args.model} on {', '.join(specs)} ({device})")
    start, close = _progress_factory()
    try:
        results = nest_metrics(sets.run(model, progress=start))
    finally:
        close()
    for title, lines in (
        ("the paper's columns (%)", paper_table(results, label)),
        ("typographic attack (%)", typographic_table(results)),
        ("other figures (% unless a count)", other_metrics_table(results)),
    ):
        if lines:
            print(f"\n{title}")
            print("\n".join(lines))
    for name, report in sets.skipped().items():
        _print_skips(report, f"benchmark {name}")
    if args.out:
        atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {args.out}")
    if args.plots:
        for name, s in sets.sets.items():
            attack = s.evaluators.get("typographic")
            if attack is not None and attack.examples:
                path = Path(args.plots) / f"typographic_{name}.png"
                plot_typographic_examples(attack.examples, path, f"{label} on {name}")
                print(f"wrote {path}")
    return 0


def _language_table(results: dict[str, float], ks: list[int]) -> list[str]:
    """Lines of a per-language recall table (x100) from the multilingual evaluator's metrics."""
    from clippo.eval.plots import per_language_values

    columns = [f"{d}_recall@{k}" for d in ("i2t", "t2i", "bitext") for k in ks]
    columns = [c for c in columns if per_language_values(results, c)]
    values = {c: per_language_values(results, c) for c in columns}
    images = per_language_values(results, "images")
    langs = sorted(images, key=lambda g: (-values[columns[0]].get(g, 0), g))
    head = f"{'language':<12} {'images':>6} " + " ".join(f"{c:>15}" for c in columns)
    lines = [head, "-" * len(head)]
    for lang in langs:
        cells = " ".join(
            f"{100 * values[c][lang]:>15.2f}" if lang in values[c] else f"{'-':>15}"
            for c in columns
        )
        lines.append(f"{lang:<12} {int(images[lang]):>6} {cells}")
    mean_cells = []
    for c in columns:
        hit = [v for k, v in results.items() if f"/{k}".endswith(f"/mean/{c}")]
        mean_cells.append(f"{100 * hit[0]:>15.2f}" if hit else f"{'-':>15}")
    lines.append(f"{'mean':<12} {'':>6} " + " ".join(mean_cells))
    return lines


def cmd_eval_multilingual(args: argparse.Namespace) -> int:
    from clippo.atomic import atomic_write_text
    from clippo.eval.plots import plot_per_language_recall
    from clippo.eval.sets import EvalSets
    from clippo.models import from_pretrained
    from clippo.train.config import EvalSetConfig

    name = args.name or Path(args.data).resolve().name
    options = {
        "ks": args.ks,
        "pivot": args.pivot,
        "languages": args.languages or [],
        "bitext": not args.no_bitext,
    }
    sets = EvalSets(
        {name: EvalSetConfig(data=args.data, evaluators={"multilingual": options})},
        batch_size=args.batch_size,
    )
    model = from_pretrained(args.model)
    print(f"embedding {args.data} (every image, every caption of every language) ...")
    results = sets.run(model)
    print("\n".join(["", f"{name}: recall (%) per language, model {args.model}"]))
    print("\n".join(_language_table(results, args.ks)))
    for set_name, report in sets.skipped().items():
        _print_skips(report, f"evaluation set {set_name}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"model": str(args.model), "data": str(args.data), "metrics": results}
    atomic_write_text(out / "metrics.json", json.dumps(record, indent=1) + "\n")
    n_images = max(v for k, v in results.items() if k.endswith("/images"))
    chance = {d: 1 / n_images for d in ("t2i", "bitext")}
    model_dir = Path(args.model).resolve()  # runs/NAME/model is named by its run
    label = args.label or (model_dir.parent.name if model_dir.name == "model" else model_dir.name)
    plot = plot_per_language_recall(
        {label: results}, out / f"recall_at_{args.ks[0]}.png", k=args.ks[0], chance=chance
    )
    print(f"\nwrote {out / 'metrics.json'} and {plot}")
    return 0


def cmd_data_tuxpaint(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from clippo.data.build.tuxpaint import build_tuxpaint_set

    with tqdm(desc="tuxpaint stamps", unit="stamp") as bar:
        stats = build_tuxpaint_set(
            args.out,
            stamps_dir=args.stamps,
            image_size=args.image_size,
            svg=args.svg,
            progress=lambda n=1: bar.update(n),
        )
    print(json.dumps({k: v for k, v in stats.items() if k != "captions_per_language"}, indent=2))
    print(f"wrote {args.out}/captions.jsonl and {args.out}/images/ (evaluation only)")
    return 0


def _print_vqa_scores(report: dict, title: str) -> None:
    rows = {"overall": 100 * report["overall"]}
    rows |= {f"  {k}": 100 * v for k, v in sorted(report["per_answer_type"].items())}
    base = report.get("baselines")
    if base:  # what answers without the image, beside the model
        names = {
            "chance": "chance",
            "majority": f"majority ({base['majority_answer']!r})",
            "question_prior": "question prior (blind)",
            "same_as_prior": "answers = the prior's",
        }
        shown = [k for k in names if k in base]
        rows |= {names[k]: 100 * base[k] for k in shown}
        for kind, b in sorted(base["per_answer_type"].items()):
            label = f"  {kind} " + " / ".join(k.replace("_", " ") for k in shown)
            rows[label] = " / ".join(f"{100 * b[k]:.2f}" for k in shown)
    rows["questions"] = report["num_questions"]
    _print_table(rows, title)


def cmd_eval_vqa(args: argparse.Namespace) -> int:
    from clippo.jobs.vqa import evaluate_vqa

    if (args.model is None) == (args.predictions is None):
        print("clippo eval vqa: give --model or --predictions (one of them)", file=sys.stderr)
        return 2
    source = Path(args.model or args.predictions)
    out = Path(args.out) if args.out else source.parent / f"vqa_{args.split}"
    if args.zero_shot and not args.out:
        out = out.with_name(out.name + "_zeroshot")
    report = evaluate_vqa(
        args.model,
        args.data,
        out,
        split=args.split,
        zero_shot=args.zero_shot,
        batch_size=args.batch_size,
        max_questions=args.max_questions,
        predictions_file=args.predictions,
    )
    kind = "zero-shot" if args.zero_shot else "fine-tuned" if args.model else "predictions"
    _print_vqa_scores(report, f"VQA accuracy (x100), {kind}, {args.split} split")
    print(f"wrote {out / 'metrics.json'} and {out / 'predictions.json'}")
    return 0


def cmd_data_vqa(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from clippo.data.build.vqa import build_vqa_shards

    with tqdm(desc="vqa", unit="question") as bar:
        stats = build_vqa_shards(
            args.source,
            args.out,
            min_count=args.min_count,
            holdout=args.holdout,
            seed=args.seed,
            shard_size=args.shard_size,
            max_questions=args.max_questions,
            progress=bar.update,
        )
    print(json.dumps({k: v for k, v in stats.items() if k != "shards"}, indent=2))
    for split, reasons in stats["skipped"].items():
        print(f"{split}: skipped {sum(reasons.values())} questions ({reasons})")
    return 0


def cmd_finetune_vqa(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from clippo.jobs.vqa import finetune_vqa
    from clippo.train.config import load_config, resolve_config

    sets = [f"finetune.data={args.data}", f"finetune.protocol={args.protocol}"]
    if Path(args.model).is_dir():
        sets.append(f"model.init={args.model}")
    else:
        sets.append(f"model.name={args.model}")
    for key, value in (
        ("finetune.lrs", args.lr),
        ("train.total_steps", args.steps),
        ("data.batch_size", args.batch_size),
        ("finetune.image_size", args.image_size),
        ("finetune.max_dev", args.max_holdout),
        ("train.seed", args.seed),
        ("train.threads", args.threads),
    ):
        if value is not None:
            sets.append(f"{key}={json.dumps(value)}")
    config = args.config or f"vqa_{args.protocol}"
    cfg = load_config(resolve_config(config), [*sets, *args.set])
    bar = tqdm(
        desc="finetune vqa",
        total=cfg.train.total_steps * len(cfg.finetune.lrs),
        unit="step",
        dynamic_ncols=True,
    )

    def on_step(lr: float, step: int, metrics: dict | None) -> None:
        bar.update(1)
        if metrics:
            bar.set_postfix(lr=f"{lr:g}", loss=f"{metrics['train/loss']:.3f}")

    out = Path(args.out)
    try:
        report = finetune_vqa(cfg, out, on_step=on_step, test_questions=args.max_test)
    finally:
        bar.close()
    print(f"\n{'lr':>8}  {'held-out VQA acc':>16}  train loss")
    for run in report["runs"]:
        mark = "  <- best" if run["lr"] == report["best_lr"] else ""
        acc = 100 * run["holdout"]["vqa_accuracy"]
        print(f"{run['lr']:>8g}  {acc:>16.2f}  {run['train_loss']:>10.4f}{mark}")
    _print_vqa_scores(report, f"test VQA accuracy (x100) at lr {report['best_lr']:g}")
    print(f"wrote {out / 'metrics.json'} and {out / 'predictions.json'}; model {report['model']}")
    return 0


def cmd_data_openclipart(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from clippo.data.build.openclipart import build_openclipart_shards

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


def cmd_tokenizer_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from clippo.data.shards import expand_urls, iter_tar_samples, sample_texts
    from clippo.data.textpairs import iter_text_pairs
    from clippo.tokenizer import Tokenizer, train_tokenizer

    if not args.shards and not args.pairs:
        raise ValueError("give --shards (image/alt-text shards), --pairs (text pairs) or both")
    require("sentencepiece", "training a tokenizer")  # before reading every shard
    texts, bad = [], 0
    urls = expand_urls(args.shards) if args.shards else []
    for url in tqdm(urls, desc="reading alt-texts", unit="shard", disable=not urls):
        for sample in iter_tar_samples(url):
            try:
                texts.extend(sample_texts(sample))
            except ValueError:  # bad JSON metadata: skipped, as the data pipeline does
                bad += 1
    if urls:
        print(f"{len(texts)} alt-texts from {len(urls)} shards ({bad} samples with bad metadata)")
    if args.pairs:
        pair_urls = expand_urls(args.pairs)
        pairs = list(tqdm(iter_text_pairs(pair_urls), desc="reading text pairs", unit="pair"))
        texts += [t for pair in pairs for t in pair]
        print(f"{2 * len(pairs)} texts from {len(pairs)} text pairs in {len(pair_urls)} shards")
    path = train_tokenizer(
        texts, args.out, args.vocab_size, character_coverage=args.character_coverage
    )
    tok = Tokenizer(path)
    example = texts[0].lower()
    pieces = tok.processor.encode(example, out_type=str)
    print(f"wrote {path}: {tok.vocab_size} pieces; {example!r} -> {pieces}")
    return 0


def _describe(model) -> str:
    from clippo.convert import variant_name
    from clippo.models import CLIPPO

    vit = model.image.cfg if isinstance(model, CLIPPO) else model.cfg
    kind = f"CLIPPO (out_dim {model.cfg.out_dim})" if isinstance(model, CLIPPO) else "ViT"
    kind += f" {variant_name(vit)}" if variant_name(vit) else ""
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return (
        f"{kind}: width {vit.width}, depth {vit.depth}, heads {vit.num_heads}, "
        f"mlp {vit.mlp_dim}, patch {vit.patch_size}, {vit.image_size} px, "
        f"pool {vit.pool_type}, posemb {vit.posemb}, classes {vit.num_classes}, "
        f"rep {vit.rep_size}; {params:.1f}M parameters"
    )


def cmd_convert_bigvision(args: argparse.Namespace) -> int:
    from clippo.convert import convert_big_vision

    model = convert_big_vision(
        args.checkpoint, args.out_dir, image_size=args.image_size, hex_files=args.unifont_hex
    )
    print(_describe(model))
    if getattr(model.cfg, "render", None) is not None:
        print(f"renderer: {model.cfg.render}")
        if not args.unifont_hex:
            print(
                "note: text renders with the packaged Unifont 15.0.01; the released CLIPPO "
                "models were trained with 9.0.06 (pass those .hex files with --unifont-hex)"
            )
    print(f"wrote {args.out_dir}")
    return 0


def cmd_convert_to_bigvision(args: argparse.Namespace) -> int:
    from clippo.convert import to_big_vision
    from clippo.models import from_pretrained

    model = from_pretrained(args.model_dir)
    to_big_vision(model, args.out, scan=args.scan)
    print(_describe(model))
    print(f"wrote {args.out} ({'scanned' if args.scan else 'per-layer'} layout)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import time

    import torch
    from tqdm import tqdm

    from clippo.jobs.demo import DEMO_KEYS, demo_config, final_results, write_report
    from clippo.jobs.pretrain import build_eval_sets, train
    from clippo.train.checkpoint import list_checkpoints

    t0 = time.perf_counter()
    data, workdir = Path(args.data), Path(args.workdir)
    print(f"[1/3] building openclipart shards in {data}")
    with tqdm(desc="openclipart", unit="img") as bar:
        cfg, stats = demo_config(data, args.set, progress=lambda n=1: bar.update(n))
    print(f"      {stats['train']} train / {stats['val']} val examples, skipped {stats['skipped']}")
    sets = build_eval_sets(cfg)
    done = list_checkpoints(workdir / "checkpoints")
    start = done[-1][0] if done else 0
    print(
        f"[2/3] training {cfg.model.name} {cfg.model.options} for {cfg.effective_total_steps} "
        f"steps of {cfg.data.batch_size}, evaluating on the held-out pairs at the end"
        + (f"; resuming at step {start}" if start else "")
    )
    bar, on_step = _progress_bar(cfg.effective_total_steps, start)
    try:
        results = train(cfg, workdir, resume=bool(done), on_step=on_step, evaluation=sets)
    except KeyboardInterrupt:
        bar.close()
        return _interrupted(bar.n, workdir, "run clippo demo again to resume")
    finally:
        bar.close()
    print("[3/3] held-out results and pictures")
    results = final_results(results, sets, workdir)
    written = write_report(cfg, workdir, results, sets)
    for name, report in sets.skipped().items():
        _print_skips(report, f"evaluation set {name}")
    _print_table(
        {k: results[k] for k in DEMO_KEYS if k in results}
        | {k: v for k, v in results.items() if k not in DEMO_KEYS},
        "held-out results",
    )
    print(
        f"\nwrote {', '.join(str(p) for p in written)}; total "
        f"{(time.perf_counter() - t0) / 60:.1f} min ({torch.get_num_threads()} threads)"
    )
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from clippo.jobs.search import image_files, search_folder
    from clippo.models import from_pretrained

    model = from_pretrained(args.model)
    total = len(image_files(args.images))
    with tqdm(total=total, desc="embedding images", unit="img") as bar:
        sheet, matches, skipped = search_folder(
            model, args.images, args.queries, args.out, top=args.top, progress=bar.update
        )
    for query, row in zip(args.queries, matches, strict=True):
        print(f'"{query}": ' + ", ".join(f"{p.name} ({s:.3f})" for p, s in row))
    if skipped:
        print(f"skipped {len(skipped)} unreadable files: " + ", ".join(list(skipped)[:5]))
    print(f"wrote {sheet}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from clippo.jobs.search import embed_folder, image_files
    from clippo.models import from_pretrained

    texts = None
    if args.texts:
        lines = Path(args.texts).read_text(encoding="utf-8").splitlines()
        texts = [t for t in lines if t.strip()]
        if not texts:
            raise ValueError(f"{args.texts}: no non-empty lines to embed")
    model = from_pretrained(args.model)
    total = len(image_files(args.images)) if args.images else 0
    with tqdm(total=total, desc="embedding images", unit="img", disable=not total) as bar:
        out, counts = embed_folder(
            model,
            args.out,
            images=args.images,
            texts=texts,
            batch_size=args.batch_size,
            progress=bar.update,
        )
    print(", ".join(f"{v} {k}" for k, v in counts.items()) + f"; wrote {out}")
    return 0


def cmd_data_textpairs(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from clippo.data.build.textpairs import corpus_pairs, write_text_pair_shards

    pairs, info, languages = corpus_pairs(
        args.source,
        args.corpus,
        lang=args.lang,
        lang_b=args.lang_b,
        dropout_rate=args.dropout_rate,
        seed=args.seed,
        max_per_language=args.max_per_language,
    )
    info = {"corpus": list(args.corpus), **info}
    balancing = args.min_per_language or args.balance_scripts is not None
    total = None if balancing else len(pairs)  # repeats: known once written
    with tqdm(total=total, desc=f"{args.source} pairs", unit="pair") as bar:
        stats = write_text_pair_shards(
            pairs,
            args.out,
            source=args.source,
            val_size=args.val_size,
            seed=args.seed,
            shard_size=args.shard_size,
            info=info,
            progress=bar.update,
            languages=languages,
            min_per_language=args.min_per_language,
            balance_scripts=args.balance_scripts,
        )
    print(json.dumps({k: v for k, v in stats.items() if k != "shards"}, indent=2))
    return 0


def cmd_data_langtasks(args: argparse.Namespace) -> int:
    from clippo.data.build.langtasks import build_language_tasks

    stats = build_language_tasks(args.out, seed=args.seed)
    for task, entry in stats.items():
        if isinstance(entry, dict):
            for split in ("train", "dev"):
                labels = ", ".join(f"{k} {v}" for k, v in entry[split]["labels"].items())
                print(f"{task:<19} {split:<5} {entry[split]['examples']:>5}  ({labels})")
    print(f"wrote {args.out}/*/{{train,dev}}.tsv and {args.out}/stats.json")
    return 0


def cmd_finetune_glue(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from clippo.eval.glue import glue_average
    from clippo.jobs.glue import run_glue_task
    from clippo.train.config import load_config, resolve_config

    sets = [f"finetune.task={args.task}", f"finetune.data={args.data}"]
    if Path(args.model).is_dir():
        sets.append(f"model.init={args.model}")
    else:
        sets.append(f"model.name={args.model}")
        if args.image_size:
            sets.append(f"model.options.image_size={args.image_size}")
        if args.tokenizer:
            sets.append(f"model.options.tokenizer={args.tokenizer}")
    for key, value in (
        ("finetune.lrs", args.lr),
        ("finetune.epochs", args.epochs),
        ("data.batch_size", args.batch_size),
        ("finetune.max_train", args.max_train),
        ("finetune.max_dev", args.max_dev),
        ("finetune.representation", args.representation),
        ("train.seed", args.seed),
        ("train.threads", args.threads),
    ):
        if value is not None:
            sets.append(f"{key}={json.dumps(value)}")
    cfg = load_config(resolve_config(args.config), [*sets, *args.set])
    bar = tqdm(desc=f"finetune {args.task}", unit="step", dynamic_ncols=True)

    def progress(lr: float, step: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(lr=f"{lr:.0e}", loss=f"{loss:.3f}")

    out = Path(args.out)
    try:
        result = run_glue_task(cfg, out, progress=progress)
    finally:
        bar.close()
    result.update(model=args.model, representation=cfg.finetune.representation)
    (out / f"{result['task']}_metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    epochs = cfg.finetune.epochs
    print(f"\n{result['task']}: train {result['sizes']['train']} examples, {epochs} epochs")
    print(f"{'lr':>8}  " + "  ".join(f"{c:>10}" for c in result["columns"]) + "  train loss")
    for run in result["runs"]:
        scores = "  ".join(f"{100 * run[s]['score']:>10.2f}" for s in result["columns"].values())
        mark = "  <- best" if run["lr"] == result["best_lr"] else ""
        print(f"{run['lr']:>8.0e}  {scores}  {run['train_loss']:>10.4f}{mark}")
    rows = {}
    for column, metrics in result["metrics"].items():
        for name, value in metrics.items():
            if name != "score":
                rows[f"{column}/{name}"] = value if name == "examples" else 100 * value
    if len(result["scores"]) > 1:
        rows["avg"] = 100 * glue_average(result["scores"])
    _print_table(rows, f"dev metrics (x100) at lr {result['best_lr']:.0e}")
    print(f"wrote {out / (result['task'] + '_metrics.json')} (runs in {out / result['task']})")
    return 0


def cmd_analyze_gap(args: argparse.Namespace) -> int:
    from clippo.jobs.analyze import analyze_gap

    r = analyze_gap(args.model, args.data, args.out, limit=args.limit, batch_size=args.batch_size)
    rows = {"pairs": r["pairs"], "modality gap": r["modality_gap"]}
    for key, label in (("pair_distance", "matching"), ("mismatched_pair_distance", "mismatched")):
        rows |= {f"{label} pair distance {s}": r[key][s] for s in ("mean", "median", "std")}
    rows["skipped samples"] = r["skipped_samples"]
    _print_table(rows, f"modality gap of {args.model} on {args.data}")
    print(f"\nwrote {', '.join(r['files'])}")
    return 0


def cmd_analyze_patches(args: argparse.Namespace) -> int:
    from clippo.jobs.analyze import analyze_patches

    r = analyze_patches(args.model, args.out, k=args.k)
    rows = {}
    for tower, t in r["towers"].items():
        rows[f"{tower}: explained variance (top {r['k']})"] = t["explained_variance_total"]
        rows[f"{tower}: horizontal-frequency share"] = t["horizontal_frequency_share"]
        rows[f"{tower}: high-frequency share"] = t["high_frequency_share"]
    _print_table(rows, f"patch embedding of {args.model} ({', '.join(r['towers'])})")
    print(f"\nwrote {', '.join(r['files'])}")
    return 0


def cmd_analyze_tokens(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from clippo.analysis.tokens import token_corpora, tokenization_summary, tokenization_table
    from clippo.atomic import atomic_write_text
    from clippo.eval.plots import plot_tokenization

    require("sentencepiece", "counting SentencePiece tokens")
    tokenizers = {Path(t).stem: t for t in args.tokenizer}
    corpora = token_corpora(args.corpus, max_texts=args.max_texts)
    rows = tokenization_table(corpora, tokenizers, image_size=args.image_size)
    summary = tokenization_summary(rows, args.threshold)
    w = max(12, *map(len, tokenizers))  # the tokenizer column fits its longest name
    head = (
        f"{'corpus':<9} {'language':<12} {'tokenizer':<{w}} {'texts':>6} {'CLIPPO':>7} "
        f"{'tokens':>7} {'shorter%':>8} {'unk%':>6}"
    )
    print(head + "\n" + "-" * len(head))
    for r in sorted(rows, key=lambda r: (r.corpus, r.tokenizer, -r.clippo_shorter, r.language)):
        print(
            f"{r.corpus:<9} {r.language:<12} {r.tokenizer:<{w}} {r.n_texts:>6} "
            f"{r.mean_clippo:>7.1f} {r.mean_tokens:>7.1f} {100 * r.clippo_shorter:>8.1f} "
            f"{100 * r.unknown_rate:>6.1f}"
        )
    print(f"\nlanguages where CLIPPO is shorter for more than {args.threshold:.0%} of texts:")
    for corpus, per_tokenizer in summary.items():
        for name, share in per_tokenizer.items():
            n = sum(r.corpus == corpus and r.tokenizer == name for r in rows)
            print(f"  {corpus:<9} vs {name:<{w}} {share:>6.1%} of {n} languages")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "image_size": args.image_size,
        "tokenizers": {k: str(v) for k, v in tokenizers.items()},
        "threshold": args.threshold,
        "summary": summary,
        "rows": [asdict(r) for r in rows],
    }
    atomic_write_text(out / "tokens.json", json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    written = [out / "tokens.json"]
    for corpus in corpora:
        mine = [asdict(r) for r in rows if r.corpus == corpus]
        title = f"{corpus}: CLIPPO patches ({args.image_size} px) vs SentencePiece pieces"
        written.append(plot_tokenization(mine, out / f"tokens_{corpus}.png", title=title))
    print("\nwrote " + ", ".join(str(p) for p in written))
    return 0


def _add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key by its dotted path; repeat it for several: "
        "--set train.total_steps=500 --set data.batch_size=128",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    from clippo import __version__

    p = argparse.ArgumentParser(
        prog="clippo",
        description="Train, evaluate and convert CLIPPO models: one Vision Transformer that reads "
        "images and text rendered with GNU Unifont.",
    )
    p.add_argument("--version", action="version", version=f"clippo {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="build openclipart shards, train a small CLIPPO, evaluate")
    d.add_argument("--workdir", default="runs/demo")
    d.add_argument("--data", default="data/openclipart", help="where the shards are built")
    _add_set(d)
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("train", help="train from a YAML config (file path or packaged name)")
    t.add_argument("config")
    t.add_argument("--workdir", required=True)
    _add_set(t)
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser(
        "eval",
        help="evaluate a saved model: the paper's benchmarks (--benchmark) or a config's sets",
    )
    e.add_argument("--model", default=None, help="a from_pretrained directory (required)")
    e.add_argument(
        "--config", default=None, help="default: the config.yaml of the run that wrote the model"
    )
    _add_set(e)
    e.add_argument(
        "--out",
        "--output",
        dest="out",
        default=None,
        help="write the metrics as JSON here ({benchmark: {metric: value}} with --benchmark)",
    )
    e.add_argument(
        "--benchmark",
        dest="bench",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a benchmark in its download layout: imagenet, imagefolder, coco, flickr30k, "
        "openclipart (val shards), tuxpaint (`clippo data tuxpaint`); repeat for several",
    )
    e.add_argument(
        "--typographic",
        action="store_true",
        help="add the typographic attack to every labelled benchmark",
    )
    e.add_argument(
        "--fonts",
        nargs="+",
        default=None,
        help="typographic attack fonts: unifont, dejavu or .ttf paths (default: unifont dejavu)",
    )
    e.add_argument("--plots", default=None, help="folder for pictures of attacked examples")
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--workers", type=int, default=2, help="DataLoader processes decoding images")
    e.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda:0, ...")
    e.add_argument(
        "--cache-dir",
        default=str(Path.home() / ".cache" / "clippo"),
        help="zero-shot classifiers kept by model fingerprint and prompt set",
    )
    e.add_argument("--no-cache", action="store_true", help="do not read or write --cache-dir")
    e.set_defaults(func=cmd_eval)
    esub = e.add_subparsers(dest="benchmark", metavar="{multilingual,vqa}")
    ev = esub.add_parser(
        "vqa", help="VQA accuracy of a fine-tuned VQA model, or of any model with --zero-shot"
    )
    ev.add_argument("--model", default=None, help="a from_pretrained directory")
    ev.add_argument(
        "--predictions",
        default=None,
        help="instead of --model: score this results file ([{question_id, answer}])",
    )
    ev.add_argument("--data", required=True, help="a folder of `clippo data vqa`")
    ev.add_argument("--split", default="test", choices=("test", "holdout"))
    ev.add_argument(
        "--zero-shot",
        action="store_true",
        help="score each answer by image/prompt similarity (CLIP-ViL sec. 5)",
    )
    ev.add_argument("--max-questions", type=int, default=None, help="the first N questions")
    ev.add_argument("--batch-size", type=int, default=256)
    ev.add_argument(
        "--out",
        default=None,
        help="folder for metrics.json and predictions.json (default MODEL/../vqa_SPLIT)",
    )
    ev.set_defaults(func=cmd_eval_vqa)
    em = esub.add_parser(
        "multilingual",
        help="per-language image<->text and bitext retrieval on a caption set (XM3600 layout)",
    )
    em.add_argument("--model", required=True, help="a from_pretrained directory")
    em.add_argument(
        "--data",
        required=True,
        help="a folder with captions.jsonl and images/KEY.jpg: XM3600 as downloaded, or "
        "`clippo data tuxpaint`'s output",
    )
    em.add_argument("--out", required=True, help="folder for metrics.json and the plot")
    em.add_argument("--ks", type=int, nargs="+", default=[1, 5, 10], help="recall@k cut-offs")
    em.add_argument("--pivot", default="en", help="the language bitext queries retrieve")
    em.add_argument("--languages", nargs="+", default=None, help="default: every language")
    em.add_argument("--no-bitext", action="store_true", help="image<->text only")
    em.add_argument("--batch-size", type=int, default=256)
    em.add_argument("--name", default=None, help="metric prefix (default: the data folder name)")
    em.add_argument("--label", default=None, help="the model's name in the plot")
    em.set_defaults(func=cmd_eval_multilingual)

    data = sub.add_parser("data", help="build data sets").add_subparsers(
        dest="source", required=True
    )
    oc = data.add_parser("openclipart", help="train/val shards from Debian's openclipart")
    oc.add_argument("--out", required=True)
    oc.add_argument("--val-size", type=int, default=1000)
    oc.add_argument("--seed", type=int, default=0)
    oc.add_argument("--image-size", type=int, default=256)
    oc.set_defaults(func=cmd_data_openclipart)
    tp = data.add_parser("textpairs", help="text/text pair shards for contrastive co-training")
    tp.add_argument(
        "--source", required=True, choices=("nsp", "translation", "backtranslation", "dropout")
    )
    tp.add_argument(
        "--corpus",
        nargs="+",
        required=True,
        help="presets debian-reference, debian-faq, fortunes, freedict, iso-codes, cldr, "
        "gettext; or text files / folders (nsp, dropout); "
        "two aligned-line files or .tsv files (translation); 'a -> b' files (backtranslation)",
    )
    tp.add_argument("--out", required=True)
    tp.add_argument(
        "--lang", default="en", help="manual language (nsp/dropout; translation side a)"
    )
    tp.add_argument(
        "--lang-b",
        default="fr",
        help="translation side b: a language (fr), several (fr,de,ja) or all; with the "
        "freedict / iso-codes / cldr corpora, English-X pairs in each",
    )
    tp.add_argument(
        "--max-per-language",
        type=int,
        default=None,
        help="translation: at most this many pairs per language and corpus (a seeded sample)",
    )
    tp.add_argument(
        "--min-per-language",
        type=int,
        default=0,
        help="translation, several languages: repeat a language's training pairs up to this "
        "many (balances the batches; the val split is unchanged)",
    )
    tp.add_argument(
        "--balance-scripts",
        type=float,
        default=None,
        metavar="ALPHA",
        help="translation, several languages: repeat each script's training pairs up to "
        "n_max*(n/n_max)**ALPHA (n_max: the largest script's; 0 <= ALPHA <= 1), so scripts "
        "of one language weigh more against Latin; the val split is unchanged",
    )
    tp.add_argument("--dropout-rate", type=float, default=0.1)
    tp.add_argument("--val-size", type=int, default=0)
    tp.add_argument("--shard-size", type=int, default=10_000)
    tp.add_argument("--seed", type=int, default=0)
    tp.set_defaults(func=cmd_data_textpairs)
    tx = data.add_parser(
        "tuxpaint",
        help="the multilingual evaluation set from Debian's tuxpaint stamps (XM3600 layout)",
    )
    tx.add_argument("--out", required=True)
    tx.add_argument("--stamps", default="/usr/share/tuxpaint/stamps", help="the stamps folder")
    tx.add_argument("--image-size", type=int, default=256, help="longer side at most this")
    tx.add_argument(
        "--svg",
        action="store_true",
        help="also the stamps drawn only as SVG (CairoSVG: pip install 'clippo[svg]')",
    )
    tx.set_defaults(func=cmd_data_tuxpaint)
    dv = data.add_parser("vqa", help="VQA shards: easy-vqa, or VQAv2 in its official layout")
    dv.add_argument("--source", required=True, help="easy-vqa, or vqav2:DIR")
    dv.add_argument("--out", required=True)
    dv.add_argument(
        "--min-count", type=int, default=9, help="answers seen this often in training (9)"
    )
    dv.add_argument(
        "--holdout", type=float, default=0.1, help="share of training questions held out, by image"
    )
    dv.add_argument("--seed", type=int, default=0)
    dv.add_argument("--shard-size", type=int, default=5000)
    dv.add_argument("--max-questions", type=int, default=None, help="per split, for quick runs")
    dv.set_defaults(func=cmd_data_vqa)
    lt = data.add_parser("langtasks", help="local language tasks in the GLUE TSV layout")
    lt.add_argument("--out", required=True)
    lt.add_argument("--seed", type=int, default=0)
    lt.set_defaults(func=cmd_data_langtasks)

    em = sub.add_parser(
        "embed",
        help="embed a folder of images (and/or a file of texts) into an .npz",
        description="L2-normalised embeddings with the model's evaluation preprocessing; "
        "unreadable images are skipped and listed in the file.",
    )
    em.add_argument("images", nargs="?", help="a folder of images (searched recursively)")
    em.add_argument("--model", required=True, help="a from_pretrained directory")
    em.add_argument("--texts", help="a UTF-8 file, one text per line")
    em.add_argument("--out", required=True, help="the .npz to write")
    em.add_argument("--batch-size", type=int, default=64)
    em.set_defaults(func=cmd_embed)

    se = sub.add_parser("search", help="text->image search over a folder of images")
    se.add_argument("queries", nargs="+", help="one or more text queries")
    se.add_argument("--model", required=True, help="a from_pretrained directory")
    se.add_argument("--images", required=True, help="a folder of images (searched recursively)")
    se.add_argument("--top", type=int, default=6, help="images shown per query")
    se.add_argument("--out", default="search.png", help="the contact sheet to write")
    se.set_defaults(func=cmd_search)

    r = sub.add_parser("render", help="render text as the model sees it")
    r.add_argument("text")
    r.add_argument(
        "-o", "--out", required=True, help="the image; its suffix sets the format (.png, .jpg, ...)"
    )
    r.add_argument("--image-size", type=int, default=224)
    r.add_argument("--show-grid", action="store_true", help="draw the 16x16 patch grid")
    r.set_defaults(func=cmd_render)

    tok = sub.add_parser("tokenizer", help="SentencePiece tokenizers for CLIP* and 1T-CLIP")
    toksub = tok.add_subparsers(dest="action", required=True)
    tt = toksub.add_parser(
        "train", help="train a SentencePiece model on shard alt-texts and/or text pairs"
    )
    tt.add_argument("--shards", help="image/alt-text shard pattern, e.g. data/train-*.tar")
    tt.add_argument(
        "--pairs",
        help="text-pair shard pattern (`clippo data textpairs`), both sides read, e.g. "
        "data/textpairs/multi/train-*.tar",
    )
    tt.add_argument("--vocab-size", type=int, default=32_000)
    tt.add_argument(
        "--character-coverage",
        type=float,
        default=0.9995,
        help="share of characters the pieces must cover (SentencePiece's; 1.0 keeps every "
        "character seen, rare CJK ones included, out of the unknown piece)",
    )
    tt.add_argument("--out", required=True, help="the .model file to write")
    tt.set_defaults(func=cmd_tokenizer_train)

    conv = sub.add_parser("convert", help="convert checkpoints from and to big_vision .npz")
    csub = conv.add_subparsers(dest="direction", required=True)
    cb = csub.add_parser("bigvision", help="big_vision CLIPPO or ViT .npz -> model directory")
    cb.add_argument("checkpoint")
    cb.add_argument("out_dir")
    cb.add_argument(
        "--unifont-hex",
        nargs="+",
        default=None,
        metavar="FILE",
        help="Unifont .hex files the renderer reads (released models: 9.0.06)",
    )
    cb.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="resample the position embedding to this resolution",
    )
    cb.set_defaults(func=cmd_convert_bigvision)
    ct = csub.add_parser("to-bigvision", help="model directory -> big_vision .npz")
    ct.add_argument("model_dir")
    ct.add_argument("out")
    ct.add_argument("--scan", action="store_true", help="stack the layers (for scan=True ViTs)")
    ct.set_defaults(func=cmd_convert_to_bigvision)

    an = sub.add_parser(
        "analyze", help="analyses of models (figures, JSON) and of the input representation"
    )
    ansub = an.add_subparsers(dest="analysis", required=True)
    ag = ansub.add_parser(
        "gap", help="modality gap, pair distances and the PCA picture on image/text shards"
    )
    ag.add_argument("--model", required=True, help="a from_pretrained directory")
    ag.add_argument("--data", required=True, help="held-out shards, e.g. 'data/val-*.tar'")
    ag.add_argument("--out", default="analysis", help="folder for the PNGs and gap.json")
    ag.add_argument("--limit", type=int, default=None, help="use the first N pairs only")
    ag.add_argument("--batch-size", type=int, default=256)
    ag.set_defaults(func=cmd_analyze_gap)
    ap = ansub.add_parser("patches", help="top principal components of the patch embeddings")
    ap.add_argument("--model", required=True, help="a from_pretrained directory")
    ap.add_argument("--out", default="analysis", help="folder for the PNGs and patches.json")
    ap.add_argument("--k", type=int, default=30, help="components shown")
    ap.set_defaults(func=cmd_analyze_patches)
    ak = ansub.add_parser(
        "tokens", help="tokenization efficiency per language: CLIPPO patches vs SentencePiece"
    )
    ak.add_argument(
        "--tokenizer",
        nargs="+",
        required=True,
        help="SentencePiece .model files (e.g. the 2k model of `clippo tokenizer train`, mT5's)",
    )
    ak.add_argument(
        "--corpus",
        nargs="+",
        default=["tuxpaint", "manuals", "fortunes"],
        choices=("tuxpaint", "manuals", "fortunes"),
    )
    ak.add_argument("--out", required=True, help="folder for tokens.json and the plots")
    ak.add_argument("--image-size", type=int, default=224, help="the render canvas (paper: 224)")
    ak.add_argument("--max-texts", type=int, default=None, help="per language, evenly spaced")
    ak.add_argument("--threshold", type=float, default=0.75, help="the paper's 75%%")
    ak.set_defaults(func=cmd_analyze_tokens)

    ft = sub.add_parser("finetune", help="fine-tune on downstream tasks")
    ftsub = ft.add_subparsers(dest="benchmark", required=True)
    fg = ftsub.add_parser("glue", help="GLUE protocol (paper sec. 4.5) on GLUE-layout TSV data")
    fg.add_argument(
        "--task",
        required=True,
        help="cola sst2 mrpc qqp stsb mnli qnli rte, or a local task: fortune_topic manual_nsp "
        "manual_translation",
    )
    fg.add_argument("--data", required=True, help="the task folder or the GLUE root folder")
    fg.add_argument(
        "--model",
        required=True,
        help="from_pretrained folder (any clippo model), or a model name (random init, e.g. "
        "clippo-B/16)",
    )
    fg.add_argument(
        "--out", required=True, help="folder for TASK_metrics.json and the runs (TASK/lr_LR)"
    )
    fg.add_argument(
        "--lr",
        type=float,
        nargs="+",
        default=None,
        help="learning rates tried, the best on dev is kept (the config's: 2e-5 3e-5 5e-5)",
    )
    fg.add_argument("--epochs", type=int, default=None, help="the config's: 3")
    fg.add_argument("--batch-size", type=int, default=None, help="the config's: 32")
    fg.add_argument("--max-train", type=int, default=None, help="subsample training examples")
    fg.add_argument("--max-dev", type=int, default=None, help="subsample dev examples")
    fg.add_argument("--representation", default=None, choices=("pre_logits", "embedding"))
    fg.add_argument("--image-size", type=int, default=None, help="for a model name only")
    fg.add_argument(
        "--tokenizer", default=None, help="SentencePiece .model, for a clip-/1t-clip- name only"
    )
    fg.add_argument("--seed", type=int, default=None, help="the config's: 0")
    fg.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    fg.add_argument("--config", default="glue", help="the fine-tuning recipe (packaged: glue)")
    _add_set(fg)
    fg.set_defaults(func=cmd_finetune_glue)
    fv = ftsub.add_parser(
        "vqa",
        help="VQA: CLIPPO's fused protocol (appendix A, B.1) or CLIP-ViL's grid protocol (the "
        "encoder as an MCAN model's backbone)",
    )
    fv.add_argument("--data", required=True, help="a folder of `clippo data vqa`")
    fv.add_argument(
        "--model",
        required=True,
        help="from_pretrained folder (any clippo model or converted ViT), or a model name "
        "(random init, e.g. clippo-Ti/16)",
    )
    fv.add_argument(
        "--protocol",
        default="fused",
        choices=("fused", "grid"),
        help="fused: the question drawn above the image, one tower fine-tuned; grid: grid and "
        "question features into an MCAN fusion (encoder frozen unless "
        "--set finetune.freeze_encoder=false)",
    )
    fv.add_argument("--out", required=True, help="folder for metrics.json and the runs (lr_LR)")
    fv.add_argument(
        "--lr",
        type=float,
        nargs="+",
        default=None,
        help="the grid (the config's: fused 0.03 0.1 0.2; grid 1e-4 3e-4 1e-3)",
    )
    fv.add_argument("--steps", type=int, default=None, help="per learning rate (config's: 8000)")
    fv.add_argument("--batch-size", type=int, default=None, help="the config's (fused: 512)")
    fv.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="fused canvas size; resamples the pos. embedding",
    )
    fv.add_argument("--max-holdout", type=int, default=None, help="score N held-out questions")
    fv.add_argument("--max-test", type=int, default=None, help="score N test questions")
    fv.add_argument("--seed", type=int, default=None, help="the config's: 0")
    fv.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    fv.add_argument(
        "--config",
        default=None,
        help="the recipe (default: the packaged vqa_fused or vqa_grid, by --protocol)",
    )
    _add_set(fv)
    fv.set_defaults(func=cmd_finetune_vqa)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``clippo`` console script."""
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except KeyboardInterrupt:  # outside training (which says where it stopped): no traceback
        print(f"\nclippo {args.command}: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, FloatingPointError, MissingExtraError) as e:
        # A full disk, a read-only directory, a bad file or value, a missing extra: one line.
        print(f"clippo {args.command}: error: {e}", file=sys.stderr)
        return 2
    # Under torchrun, leave the process group together (after an error, torchrun stops the rest).
    if "torch.distributed" in sys.modules:
        from clippo.train.distributed import shutdown_distributed

        shutdown_distributed()
    return code


if __name__ == "__main__":
    sys.exit(main())
