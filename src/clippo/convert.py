"""Checkpoint compatibility with big_vision: its ``.npz`` files <-> clippo models.

A big_vision ``.npz`` is a flattened parameter tree with ``/``-joined keys. A CLIPPO one-tower
model keeps its ViT under ``img/`` and the log-temperature in ``t``; a plain ViT classifier is
the ViT tree itself. Layers are stored either one subtree per layer
(``Transformer/encoderblock_N/...``) or stacked along a leading axis by ``nn.scan``
(``Transformer/encoderblock/...``). Everything about the model's shape is read off the arrays.

``from_big_vision`` reads one, ``to_big_vision`` writes one, ``load_big_vision_vit_into``
initialises an image tower from a pretrained ViT (big_vision's ``model_init`` + ``dont_load``).
Usage and the equivalence tests: docs/convert.md.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clippo.atomic import atomic_write
from clippo.models.clippo import CLIPPO, CLIPPOConfig
from clippo.models.io import save_pretrained
from clippo.models.vit import VARIANTS, ViT, ViTConfig

# How the released CLIPPO models render text (big_vision configs/proj/clippo/train_clippo.py and
# render_unifont's defaults), in clippo.render.UnifontRenderer's argument names. Written out in
# full so a converted model's config.json does not depend on clippo's defaults.
RELEASED_RENDER = {
    "font_size": 16,
    "max_chars": 768,
    "background": 127,
    "foreground": 0,
    "lower": True,
    "monospace": False,
    "spacing": 1,
    "min_width": 4,
}
# What big_vision's CLIPPO config skips when it initialises the image tower from an ImageNet-21k
# ViT (``model_load.img_load_kw.dont_load``): the classifier head, the MAP head and [cls].
CLIPPO_DONT_LOAD = ("^head/.*", "^MAPHead_0/.*", "cls")

_SCANNED = "Transformer/encoderblock/"
_LAYER = re.compile(r"^Transformer/encoderblock_(\d+)/")
_NUMBERED = re.compile(r"^(.*)_(\d+)$")

# Array layout changes between flax (kernels (in, out), per-head attention kernels, HWIO convs)
# and torch (weights (out, in), OIHW convs). Each kind: (to torch, to big_vision given #heads).
_KINDS = {
    "copy": (lambda a: a, lambda a, h: a),
    "dense": (lambda a: a.T, lambda a, h: a.T),
    "conv": (lambda a: a.transpose(3, 2, 0, 1), lambda a, h: a.transpose(2, 3, 1, 0)),
    "heads_in": (lambda a: a.reshape(len(a), -1).T, lambda a, h: a.T.reshape(a.shape[1], h, -1)),
    "heads_bias": (lambda a: a.reshape(-1), lambda a, h: a.reshape(h, -1)),
    "heads_out": (lambda a: a.reshape(-1, a.shape[-1]).T, lambda a, h: a.T.reshape(h, -1, len(a))),
}


def _layer_norm(bv: str, pt: str) -> list[tuple[str, str, str]]:
    return [(f"{bv}/scale", f"{pt}.weight", "copy"), (f"{bv}/bias", f"{pt}.bias", "copy")]


def _dense(bv: str, pt: str) -> list[tuple[str, str, str]]:
    return [(f"{bv}/kernel", f"{pt}.weight", "dense"), (f"{bv}/bias", f"{pt}.bias", "copy")]


def _attention(bv: str, pt: str) -> list[tuple[str, str, str]]:
    rows = []
    for name in ("query", "key", "value"):
        rows += [
            (f"{bv}/{name}/kernel", f"{pt}.{name}.weight", "heads_in"),
            (f"{bv}/{name}/bias", f"{pt}.{name}.bias", "heads_bias"),
        ]
    return rows + [
        (f"{bv}/out/kernel", f"{pt}.out.weight", "heads_out"),
        (f"{bv}/out/bias", f"{pt}.out.bias", "copy"),
    ]


def _mlp(bv: str, pt: str) -> list[tuple[str, str, str]]:
    return _dense(f"{bv}/Dense_0", f"{pt}.fc1") + _dense(f"{bv}/Dense_1", f"{pt}.fc2")


def _vit_table(cfg: ViTConfig) -> list[tuple[str, str, str]]:
    """(big_vision name, clippo ViT state_dict name, layout kind) for every parameter."""
    rows = [
        ("embedding/kernel", "patch_embed.weight", "conv"),
        ("embedding/bias", "patch_embed.bias", "copy"),
    ]
    if cfg.posemb == "learn":
        rows.append(("pos_embedding", "pos_embed", "copy"))
    if cfg.pool_type == "tok":
        rows.append(("cls", "cls", "copy"))
    for i in range(cfg.depth):
        bv, pt = f"Transformer/encoderblock_{i}", f"blocks.{i}"
        rows += _layer_norm(f"{bv}/LayerNorm_0", f"{pt}.norm1")
        rows += _attention(f"{bv}/MultiHeadDotProductAttention_0", f"{pt}.attn")
        rows += _layer_norm(f"{bv}/LayerNorm_1", f"{pt}.norm2")
        rows += _mlp(f"{bv}/MlpBlock_0", f"{pt}.mlp")
    rows += _layer_norm("Transformer/encoder_norm", "norm")
    if cfg.pool_type == "map":
        rows.append(("MAPHead_0/probe", "map_head.probe", "copy"))
        rows += _attention("MAPHead_0/MultiHeadDotProductAttention_0", "map_head.attn")
        rows += _layer_norm("MAPHead_0/LayerNorm_0", "map_head.norm")
        rows += _mlp("MAPHead_0/MlpBlock_0", "map_head.mlp")
    if cfg.rep_size:
        rows += _dense("pre_logits", "pre_logits")
    if cfg.num_classes:
        rows += _dense("head", "head")
    return rows


def resample_posemb(posemb: np.ndarray | torch.Tensor, new_grid: int) -> np.ndarray | torch.Tensor:
    """Resizes a learned position embedding ``(1, g*g, D)`` to ``(1, new_grid**2, D)``.

    Bilinear on the 2-D grid with the grid's corners kept in place: what big_vision's
    ``resample_posemb`` computes with ``scipy.ndimage.zoom(order=1)``, in numpy (float64
    inside), so clippo needs no scipy. Returns the input's type.
    """
    if not isinstance(new_grid, int) or new_grid < 1:
        raise ValueError(f"new_grid must be a positive int, got {new_grid!r}")
    is_tensor = isinstance(posemb, torch.Tensor)
    old = posemb.detach().cpu().float().numpy() if is_tensor else np.asarray(posemb)
    grid = int(np.sqrt(old.shape[1])) if old.ndim == 3 else 0
    if old.ndim != 3 or old.shape[0] != 1 or grid * grid != old.shape[1]:
        raise ValueError(f"expected a position embedding (1, g*g, D), got shape {old.shape}")
    if grid == new_grid:
        return posemb
    new = old.reshape(grid, grid, -1).astype(np.float64)
    new = _linear_resize(_linear_resize(new, new_grid, axis=0), new_grid, axis=1)
    new = new.reshape(1, new_grid * new_grid, -1).astype(old.dtype)
    return torch.from_numpy(new).to(posemb.dtype).to(posemb.device) if is_tensor else new


def _linear_resize(a: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Linear interpolation along one axis, output sample i at input position
    i * (n - 1) / (size - 1): ``scipy.ndimage.zoom``'s sample grid for order 1."""
    n = a.shape[axis]
    if n == 1 or size == 1:
        return np.repeat(np.take(a, [0], axis=axis), size, axis=axis)
    pos = np.arange(size) * ((n - 1) / (size - 1))
    lo = np.minimum(np.floor(pos).astype(int), n - 2)
    frac = (pos - lo).reshape([-1 if d == axis else 1 for d in range(a.ndim)])
    return np.take(a, lo, axis=axis) * (1 - frac) + np.take(a, lo + 1, axis=axis) * frac


@dataclass
class _Source:
    """Where a ViT tree was read from, so that errors name keys as the file spells them."""

    path: str
    prefix: str = ""  # dropped from the file's names: "params/", "img/"
    scanned: bool = False  # the file stacks the layers in Transformer/encoderblock

    def key(self, name: str) -> str:
        return self.prefix + (_LAYER.sub(_SCANNED, name) if self.scanned else name)

    def error(self, message: str) -> ValueError:
        return ValueError(f"{self.path}: {message}")


def read_big_vision_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The parameters of a big_vision ``.npz``: ``/``-joined names -> float arrays.

    Drops the ``params/`` (or ``opt/target/``) prefix that full checkpoints carry, and widens
    bfloat16 arrays (stored by numpy as 2-byte voids) to float32.
    """
    return _read(path)[0]


def _read(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
    """``read_big_vision_npz`` and the prefix it dropped."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):  # np.load read a plain .npy array
                raise ValueError("a single array, not a parameter archive")
            flat = {k: _recover_dtype(data[k]) for k in data.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        # numpy calls any non-archive "pickled data", which misleads: say what the file is not.
        detail = "not a NumPy archive" if "pickle" in str(e) else str(e)
        raise ValueError(
            f"{path}: not a readable big_vision .npz (truncated, or another format: {detail})"
        ) from None
    for prefix in ("params/", "opt/target/"):
        if flat and all(k.startswith(prefix) for k in flat):
            return {k[len(prefix) :]: v for k, v in flat.items()}, prefix
    return flat, ""


def _recover_dtype(a: np.ndarray) -> np.ndarray:
    if a.dtype.type is np.void and a.dtype.itemsize == 2:
        return (a.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return a


def _subtree(flat: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) :]: v for k, v in flat.items() if k.startswith(prefix)}


def _unstack_layers(flat: dict[str, np.ndarray], src: _Source) -> dict[str, np.ndarray]:
    """Scanned layout (all layers stacked in ``encoderblock``) -> one subtree per layer."""
    out = {k: v for k, v in flat.items() if not k.startswith(_SCANNED)}
    for key, value in flat.items():
        if key.startswith(_SCANNED):
            src.scanned = True
            if mixed := next((k for k in flat if _LAYER.match(k)), None):
                raise src.error(
                    f"unexpected key {src.prefix + mixed!r}: per-layer and scanned layers "
                    f"({src.prefix + key!r}) in one file"
                )
            for i, layer in enumerate(value):
                out[f"Transformer/encoderblock_{i}/{key[len(_SCANNED) :]}"] = layer
    return out


def _renumber_pre_linen(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Module numbering per class, as flax's ``convert_pre_linen``: old ViT releases number
    the submodules of a block across classes (LayerNorm_0, MultiHeadDotProductAttention_1,
    LayerNorm_2, MlpBlock_3)."""
    children: dict[str, set[str]] = {}
    for key in flat:
        parts = key.split("/")
        for depth in range(len(parts) - 1):
            children.setdefault("/".join(parts[:depth]), set()).add(parts[depth])
    renames: dict[str, str] = {}  # "parent/child" -> new child name
    for parent, names in children.items():
        groups: dict[str, list[tuple[int, str]]] = {}
        for name in names:
            if m := _NUMBERED.match(name):
                groups.setdefault(m[1], []).append((int(m[2]), name))
        for module, numbered in groups.items():
            for new, (_, name) in enumerate(sorted(numbered)):
                renames[f"{parent}/{name}"] = f"{module}_{new}"

    def rename(key: str) -> str:
        parts = key.split("/")
        for depth in range(len(parts) - 1):
            parts[depth] = renames.get(f"{'/'.join(parts[:depth])}/{parts[depth]}", parts[depth])
        return "/".join(parts)

    return {rename(k): v for k, v in flat.items()}


def _fix_old_layout(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Reads the layouts of older ViT releases the way big_vision's ``fix_old_checkpoints``
    does (the ImageNet-21k checkpoints the paper initialises from are such files)."""
    flat = _renumber_pre_linen(flat)
    for old in ("Transformer/posembed_input/pos_embedding", "Transformer/pos_embedding"):
        if old in flat:
            flat["pos_embedding"] = flat.pop(old)
    pe = flat.get("pos_embedding")
    if pe is not None and int(np.sqrt(pe.shape[1])) ** 2 + 1 == pe.shape[1]:
        # The [cls] token once got a posemb entry too; fold it into the token.
        flat["pos_embedding"] = pe[:, 1:]
        if "cls" in flat:
            flat["cls"] = flat["cls"] + pe[:, :1]
    if "probe" in flat:  # the MAP head was inlined during ViT-G development
        inlined = ("probe", "MlpBlock_0", "MultiHeadDotProductAttention_0", "LayerNorm_0")
        for key in [k for k in flat if k.split("/")[0] in inlined]:
            flat[f"MAPHead_0/{key}"] = flat.pop(key)
    return flat


def _vit_tree(flat: dict[str, np.ndarray], src: _Source) -> dict[str, np.ndarray]:
    """A ViT subtree in the canonical per-layer, current-naming layout."""
    return _fix_old_layout(_unstack_layers(flat, src))


def _need(flat: dict[str, np.ndarray], key: str, src: _Source) -> np.ndarray:
    if key not in flat:
        raise src.error(f"missing key {src.key(key)!r}")
    return flat[key]


def _infer_vit_config(
    flat: dict[str, np.ndarray], src: _Source, image_size: int | None
) -> ViTConfig:
    """Reads width, depth, heads, MLP size, patch size, pooling and posemb off the arrays."""
    kernel = _need(flat, "embedding/kernel", src)
    if kernel.ndim != 4 or kernel.shape[0] != kernel.shape[1]:
        raise src.error(f"{src.key('embedding/kernel')!r} must be (p, p, C, D), got {kernel.shape}")
    patch, _, channels, width = kernel.shape
    layers = {int(m[1]) for k in flat if (m := _LAYER.match(k))}
    depth = max(layers, default=-1) + 1
    block = "Transformer/encoderblock_0"
    heads = _need(flat, f"{block}/MultiHeadDotProductAttention_0/query/kernel", src).shape[1]
    mlp_dim = _need(flat, f"{block}/MlpBlock_0/Dense_0/kernel", src).shape[1]
    if any(k.startswith("MAPHead_0/") for k in flat):
        pool = "map"
    else:
        pool = "tok" if "cls" in flat else "gap"  # "gap" is big_vision's default
    posemb = "learn" if "pos_embedding" in flat else "sincos2d"
    if posemb == "learn":
        n = flat["pos_embedding"].shape[1]
        grid = int(np.sqrt(n))
        if grid * grid != n:
            raise src.error(f"{src.key('pos_embedding')!r} has {n} entries, not a square grid")
        image_size = image_size or grid * patch
    rep = flat.get("pre_logits/kernel")
    head = flat.get("head/kernel")
    return ViTConfig(
        width=width,
        depth=depth,
        mlp_dim=mlp_dim,
        num_heads=heads,
        patch_size=patch,
        image_size=image_size or 224,
        posemb=posemb,
        pool_type=pool,
        num_classes=0 if head is None else head.shape[1],
        rep_size=0 if rep is None else rep.shape[1],
        in_channels=channels,
    )


def _load_vit(vit: ViT, flat: dict[str, np.ndarray], src: _Source) -> None:
    """Loads big_vision ViT parameters into ``vit``; every key must be used, shapes must fit."""
    table = _vit_table(vit.cfg)
    unexpected = sorted(set(flat) - {bv for bv, _, _ in table})
    if unexpected:
        raise src.error(
            f"unexpected key {src.key(unexpected[0])!r} ({len(unexpected)} unexpected in all)"
        )
    expected = vit.state_dict()
    state = {}
    for bv, pt, kind in table:
        array = np.asarray(_need(flat, bv, src), np.float32)
        want = _KINDS[kind][1](expected[pt].numpy(), vit.cfg.num_heads).shape
        if array.shape != want:
            raise src.error(f"{src.key(bv)!r} has shape {array.shape}, expected {want}")
        state[pt] = torch.from_numpy(np.ascontiguousarray(_KINDS[kind][0](array)))
    vit.load_state_dict(state)


def variant_name(cfg: ViTConfig) -> str | None:
    """``"B/16"`` when a ViT's sizes are a named big_vision variant, else None."""
    for name, sizes in VARIANTS.items():
        if sizes == (cfg.width, cfg.depth, cfg.mlp_dim, cfg.num_heads):
            return f"{name}/{cfg.patch_size}"
    return None


def _render_settings(hex_files: Sequence[str | os.PathLike] | None) -> dict:
    render = dict(RELEASED_RENDER)
    if isinstance(hex_files, str | os.PathLike):
        raise TypeError("hex_files must be a list of paths, not a single path")
    if hex_files:
        paths = [Path(p).resolve() for p in hex_files]
        for p in paths:
            if not p.is_file():
                raise FileNotFoundError(f"Unifont .hex file not found: {p}")
        render["hex_files"] = [str(p) for p in paths]
    return render


def from_big_vision(
    path: str | os.PathLike,
    image_size: int | None = None,
    hex_files: Sequence[str | os.PathLike] | None = None,
) -> CLIPPO | ViT:
    """Builds a clippo model from a big_vision ``.npz``: a CLIPPO one-tower model or a ViT.

    ``image_size`` other than the checkpoint's resamples the position embedding (and sets the
    size of sin-cos ones, which the file cannot tell; default 224). ``hex_files`` are the
    Unifont ``.hex`` files the CLIPPO model's renderer reads (the released models: 9.0.06).
    """
    flat, outer = _read(path)
    is_clippo = any(k.startswith("img/") for k in flat)
    src = _Source(str(path), outer + "img/" if is_clippo else outer)
    if is_clippo:
        extra = sorted(k for k in flat if k != "t" and not k.startswith("img/"))
        if extra:
            raise src.error(f"unexpected key {outer + extra[0]!r} (a one-tower CLIPPO has img/, t)")
        if "t" not in flat:
            raise src.error(f"missing key {outer + 't'!r}")
    vit_flat = _vit_tree(_subtree(flat, "img/") if is_clippo else flat, src)
    cfg = _infer_vit_config(vit_flat, src, image_size)
    if cfg.posemb == "learn":
        vit_flat["pos_embedding"] = resample_posemb(vit_flat["pos_embedding"], cfg.grid)
    if not is_clippo:
        if hex_files:
            raise ValueError(f"{path} is a ViT classifier, not CLIPPO: it renders no text")
        model = ViT(cfg)
        _load_vit(model, vit_flat, src)
        return model.eval()
    if not cfg.num_classes:
        raise src.error(f"missing key {src.key('head/kernel')!r} (CLIPPO's output projection)")
    model = CLIPPO(
        CLIPPOConfig(vit=cfg, out_dim=cfg.num_classes, render=_render_settings(hex_files))
    )
    _load_vit(model.image, vit_flat, src)
    with torch.no_grad():
        model.t.copy_(torch.from_numpy(np.asarray(flat["t"], np.float32).reshape(1)))
    return model.eval()


def big_vision_params(model: CLIPPO | ViT, scan: bool = False) -> dict[str, np.ndarray]:
    """A clippo model's parameters as big_vision names them (``scan``: layers stacked)."""
    vit = model.image if isinstance(model, CLIPPO) else model
    if isinstance(model, CLIPPO) and model.cfg.text_tower != "shared":
        raise ValueError(
            f"big_vision's one-tower CLIPPO shares all weights; this model has "
            f"text_tower={model.cfg.text_tower!r}"
        )
    state = {k: v.detach().cpu().float().numpy() for k, v in vit.state_dict().items()}
    heads = vit.cfg.num_heads
    flat = {
        bv: np.ascontiguousarray(_KINDS[kind][1](state[pt], heads))
        for bv, pt, kind in _vit_table(vit.cfg)
    }
    if scan:
        layers = [k for k in flat if _LAYER.match(k)]
        for key in [k for k in layers if k.startswith("Transformer/encoderblock_0/")]:
            rest = key[len("Transformer/encoderblock_0/") :]
            flat[_SCANNED + rest] = np.stack(
                [flat[f"Transformer/encoderblock_{i}/{rest}"] for i in range(vit.cfg.depth)]
            )
        for key in layers:
            del flat[key]
    if isinstance(model, CLIPPO):
        flat = {f"img/{k}": v for k, v in flat.items()}
        flat["t"] = model.t.detach().cpu().float().numpy()
    return flat


def to_big_vision(model: CLIPPO | ViT, path: str | os.PathLike, scan: bool = False) -> Path:
    """Writes a clippo model as a big_vision ``.npz`` (``scan``: for ``scan=True`` ViTs).

    The parameters are mapped before the file is touched, and written atomically, so a model
    that cannot be converted leaves an existing ``path`` as it was.
    """
    if not isinstance(model, CLIPPO | ViT):
        raise ValueError(
            f"big_vision's .npz holds a CLIPPO one-tower model or a ViT; got {type(model).__name__}"
        )
    params = big_vision_params(model, scan=scan)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object keeps numpy from appending ".npz"
            np.savez(f, **params)

    return atomic_write(path, write)


def load_big_vision_vit_into(
    model: CLIPPO | ViT, path: str | os.PathLike, dont_load: Sequence[str] = ()
) -> list[str]:
    """Initialises a ViT (a CLIPPO model's image tower) from a big_vision ViT ``.npz``.

    As big_vision's ``model_init`` with ``dont_load``: parameters whose name fully matches a
    pattern keep their current value; any other name present on only one side is an error.
    The position embedding is resampled to the model's grid. A CLIPPO ``.npz`` contributes
    its ``img/`` tower. Returns the names of the parameters taken from the file.
    """
    vit = model.image if isinstance(model, CLIPPO) else model
    patterns = []
    for p in [dont_load] if isinstance(dont_load, str) else dont_load:
        if p.startswith("/"):
            raise ValueError(f"big_vision parameter names never start with '/': {p!r}")
        patterns.append(re.compile(p))
    flat, outer = _read(path)
    src = _Source(str(path), outer)
    if any(k.startswith("img/") for k in flat):
        flat, src.prefix = _subtree(flat, "img/"), outer + "img/"
    loaded = _vit_tree(flat, src)
    current = big_vision_params(vit)

    def keep(name: str) -> bool:
        return any(p.fullmatch(name) for p in patterns)

    for names, side in (
        (set(current) - set(loaded), "missing from the file"),
        (set(loaded) - set(current), "not in the model"),
    ):
        bad = sorted(n for n in names if not keep(n))
        if bad:
            raise src.error(
                f"parameter {bad[0]!r} is {side} ({len(bad)} such); add a dont_load pattern for it"
            )
    taken = sorted(n for n in current if n in loaded and not keep(n))
    merged = {**current, **{n: np.asarray(loaded[n], np.float32) for n in taken}}
    if "pos_embedding" in taken:
        merged["pos_embedding"] = resample_posemb(merged["pos_embedding"], vit.cfg.grid)
    _load_vit(vit, merged, src)
    return taken


def convert_big_vision(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    image_size: int | None = None,
    hex_files: Sequence[str | os.PathLike] | None = None,
) -> CLIPPO | ViT:
    """``from_big_vision`` then ``save_pretrained``: a big_vision ``.npz`` -> a model directory
    (a CLIPPO model, or a ViT classifier that ``from_pretrained`` reads back)."""
    model = from_big_vision(path, image_size=image_size, hex_files=hex_files)
    save_pretrained(model, out_dir)
    return model
