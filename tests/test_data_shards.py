"""ShardDataset: img2dataset layout, partitioning, determinism, exact resume and bad samples."""

import gzip
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import clippo.data.shards as shards_module
from clippo.data import ImageTransform, InMemoryShardDataset, ShardDataset, load_image
from clippo.data.build.openclipart import build_openclipart_shards
from clippo.data.shards import expand_urls, iter_tar_samples, sample_label, sample_texts

ROOT = Path("/usr/share/openclipart/png")
MEMBER_CAP = 16 * 1024  # max_member_bytes for the oversize shards: above every good member


def stand_in_renderer(text: str) -> np.ndarray:
    """Stands in for the Unifont renderer: any picklable str -> uint8 (H, W)."""
    return np.full((8, 8), len(text) % 256, np.uint8)


def write_shard(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for key, files in samples:
            for ext, data in files.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def jpeg_of(png: Path) -> bytes:
    image = load_image(png)
    image.thumbnail((64, 64))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG")
    return buffer.getvalue()


def img2dataset_sample(key: str, jpg: bytes, caption: str | None) -> dict[str, bytes]:
    meta = {"url": f"http://example.com/{key}.jpg", "key": key, "caption": caption}
    files = {"jpg": jpg, "json": json.dumps(meta).encode()}
    if caption is not None:
        files["txt"] = caption.encode()
    return files


@pytest.fixture(scope="module")
def oc(tmp_path_factory) -> dict:
    """Small real shards: about 50 openclipart images in 6 train and 2 val shards."""
    out = tmp_path_factory.mktemp("oc")
    files = sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("*.png"))[::150]
    stats = build_openclipart_shards(
        out, files=files, val_size=10, shard_size=8, image_size=48, seed=0
    )
    train = [str(out / n) for n in stats["shards"]["train"]]
    keys = [s["__key__"] for url in train for s in iter_tar_samples(url)]
    return {
        "dir": out,
        "stats": stats,
        "train": train,
        "keys": keys,
        "val": [str(out / n) for n in stats["shards"]["val"]],
    }


@pytest.fixture(scope="module")
def messy(tmp_path_factory) -> dict:
    """An img2dataset-style shard with 8 good samples and 5 bad ones of every kind."""
    out = tmp_path_factory.mktemp("messy")
    pngs = sorted(ROOT.rglob("*.png"))[5::400][:9]
    good = [
        (f"{i:09d}", img2dataset_sample(f"{i:09d}", jpeg_of(p), p.stem.replace("_", " ")))
        for i, p in enumerate(pngs[:8])
    ]
    jpg = jpeg_of(pngs[8])
    bad = [
        ("bad_truncated", img2dataset_sample("bad_truncated", jpg[: len(jpg) // 2], "half")),
        ("bad_garbage", img2dataset_sample("bad_garbage", b"\x00not a jpeg at all", "junk")),
        ("bad_notext", img2dataset_sample("bad_notext", jpg, None)),
        ("bad_json", {"jpg": jpg, "json": b"{not json"}),
        ("bad_noimage", {"txt": b"a caption without its image"}),
    ]
    samples = good[:3] + bad[:2] + good[3:6] + bad[2:] + good[6:]
    path = write_shard(out / "messy-000000.tar", samples)
    return {"path": str(path), "good": [k for k, _ in good]}


@pytest.fixture(scope="module")
def oversize(tmp_path_factory) -> dict:
    """5 samples, the middle one valid but for a caption 1 byte over MEMBER_CAP; tar and tar.gz."""
    out = tmp_path_factory.mktemp("oversize")
    pngs = sorted(ROOT.rglob("*.png"))[7::400][:5]
    samples = [
        (f"{i:09d}", img2dataset_sample(f"{i:09d}", jpeg_of(p), p.stem.replace("_", " ")))
        for i, p in enumerate(pngs)
    ]
    samples[2][1]["txt"] = b"x" * (MEMBER_CAP + 1)
    assert all(len(d) <= MEMBER_CAP for k, f in samples for e, d in f.items() if e != "txt")
    tar = write_shard(out / "big-000000.tar", samples)
    gz = out / "big-000000.tar.gz"
    gz.write_bytes(gzip.compress(tar.read_bytes()))
    keys = [k for k, _ in samples]
    return {"tar": str(tar), "tar.gz": str(gz), "big": keys[2], "good": keys[:2] + keys[3:]}


@pytest.fixture(scope="module")
def undecodable(tmp_path_factory) -> dict:
    """2 good PNG samples around one whose PNG passes every raw check (readable header, end
    marker) but breaks when decoded: a corrupted image-data chunk."""
    out = tmp_path_factory.mktemp("undecodable")
    pngs = sorted(ROOT.rglob("*.png"))[3::400][:3]
    samples = []
    for i, path in enumerate(pngs):
        image = load_image(path)
        image.thumbnail((40, 40))
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        data = bytearray(buffer.getvalue())
        if i == 1:
            at = data.index(b"IDAT")
            data[at + 8 : at + 16] = bytes(8)
        samples.append((f"png{i}", {"png": bytes(data), "txt": path.stem.encode()}))
    return {"path": str(write_shard(out / "undecodable-000000.tar", samples))}


def eval_keys(urls, workers=0, **kwargs) -> list[str]:
    dataset = ShardDataset(
        urls, batch_size=4, image_transform=ImageTransform(16), train=False, **kwargs
    )
    loader = DataLoader(dataset, batch_size=None, num_workers=workers)
    return [k for batch in loader for k in batch["key"]]


def train_dataset(urls, reader=ShardDataset, **kwargs) -> ShardDataset:
    transform = ImageTransform(24, train=True, flip=True, random_resized_crop=(0.5, 1.0), seed=1)
    return reader(
        urls,
        batch_size=4,
        image_transform=transform,
        text_transform=stand_in_renderer,
        train=True,
        shuffle_buffer=16,
        **kwargs,
    )


def take(loader, n: int) -> list[dict]:
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_expand_urls_accepts_braces_lists_directories_and_globs(oc):
    d = oc["dir"]
    train = sorted(str(p) for p in d.glob("train-*.tar"))
    assert expand_urls(str(d / "train-{000000..000005}.tar")) == train
    assert expand_urls(str(d / "{train,val}-000000.tar")) == [train[0], str(d / "val-000000.tar")]
    assert expand_urls(str(d / "train-*.tar")) == train
    assert expand_urls(d) == sorted(train + oc["val"])
    assert expand_urls([train[1], train[0]]) == [train[1], train[0]]
    assert expand_urls(f"{train[0]}::{train[1]}") == train[:2]


def test_expand_urls_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="2 shard.* not found.*01.tar.*02.tar"):
        expand_urls(str(tmp_path / "train-{000001..000002}.tar"))
    with pytest.raises(FileNotFoundError, match="no shards match"):
        expand_urls(str(tmp_path / "*.tar"))
    with pytest.raises(FileNotFoundError, match="no .tar shards in directory"):
        expand_urls(tmp_path)


def test_samples_group_tar_members_by_key(messy):
    samples = list(iter_tar_samples(messy["path"]))
    assert [s["__key__"] for s in samples[:4]] == [
        "000000000",
        "000000001",
        "000000002",
        "bad_truncated",
    ]
    assert sorted(samples[0]) == ["__key__", "__url__", "jpg", "json", "txt"]


def test_sample_texts_reads_img2dataset_and_clippo_fields():
    caption = {"__key__": "k", "txt": b"a dog", "json": b'{"caption": "a dog", "url": "x"}'}
    assert sample_texts(caption) == ["a dog"]
    fields = {
        "__key__": "k",
        "json": json.dumps(
            {"title": "Dog", "description": " ", "keywords": ["pet", "dog"], "label": 3}
        ).encode(),
    }
    assert sample_texts(fields) == ["Dog", "pet, dog"]
    assert sample_label(fields) == 3
    assert sample_label({"__key__": "k", "cls": b"7\n"}) == 7
    assert sample_label(caption) == -1
    with pytest.raises(ValueError, match="k.json is not valid JSON"):
        sample_texts({"__key__": "k", "json": b"{oops"})


def test_batches_have_the_documented_shapes_and_types(oc):
    dataset = train_dataset(oc["train"])
    batch = next(iter(dataset))
    assert batch["image"].shape == (4, 3, 24, 24) and batch["image"].dtype == torch.float32
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1
    assert batch["text_input"].shape == (4, 8, 8) and batch["text_input"].dtype == torch.uint8
    assert batch["text_input"][:, 0, 0].tolist() == [len(t) % 256 for t in batch["text"]]
    assert batch["label"].dtype == torch.int64 and (batch["label"] >= 0).all()
    assert all(t in ts for t, ts in zip(batch["text"], batch["texts"], strict=True))
    assert len(batch["key"]) == 4 and batch["skipped"] == 0


@pytest.mark.parametrize("workers", [0, 2])
def test_eval_reads_every_sample_once_and_keeps_the_partial_batch(oc, workers):
    dataset = ShardDataset(
        oc["train"], batch_size=4, image_transform=ImageTransform(16), train=False
    )
    loader = DataLoader(dataset, batch_size=None, num_workers=workers)
    batches = list(loader)
    keys = [k for b in batches for k in b["key"]]
    assert sorted(keys) == sorted(oc["keys"])
    if workers == 0:
        assert keys == oc["keys"]  # evaluation keeps the shards' order
        assert [len(b["key"]) for b in batches] == [4] * (len(keys) // 4) + [len(keys) % 4]


@pytest.mark.parametrize("shards", ["many", "one"])
def test_ranks_and_workers_split_the_data_without_duplicates(oc, shards):
    # 6 shards over 2 ranks x 2 workers are split by shard; 1 shard is split by sample.
    urls = oc["train"] if shards == "many" else oc["train"][:1]
    expected = [s["__key__"] for url in urls for s in iter_tar_samples(url)]
    per_rank = [eval_keys(urls, workers=2, rank=r, world_size=2) for r in range(2)]
    assert all(per_rank)
    assert sorted(per_rank[0] + per_rank[1]) == sorted(expected)


def test_training_order_depends_only_on_the_seed(oc):
    first = [b["key"] for b in take(train_dataset(oc["train"], seed=4), 5)]
    again = [b["key"] for b in take(train_dataset(oc["train"], seed=4), 5)]
    other = [b["key"] for b in take(train_dataset(oc["train"], seed=5), 5)]
    assert first == again and first != other


def test_training_loops_over_epochs_each_a_reshuffled_permutation(oc):
    n = len(oc["keys"])
    dataset = train_dataset(oc["train"])
    keys = [k for b in take(dataset, (2 * n) // 4 + 1) for k in b["key"]]
    assert sorted(keys[:n]) == sorted(oc["keys"])
    assert sorted(keys[n : 2 * n]) == sorted(oc["keys"])
    assert keys[:n] != keys[n : 2 * n] and keys[:n] != oc["keys"]


def test_shuffle_buffer_draws_from_the_next_buffer_size_samples(oc):
    shard = oc["train"][0]
    order = [s["__key__"] for s in iter_tar_samples(shard)]
    firsts = set()
    for seed in range(12):
        dataset = ShardDataset(
            shard, batch_size=1, image_transform=ImageTransform(8), seed=seed, shuffle_buffer=4
        )
        firsts.add(next(iter(dataset))["key"][0])
    # The first output is drawn uniformly from the first buffer-size samples.
    assert firsts <= set(order[:4]) and len(firsts) >= 3


def test_random_text_sampling_is_deterministic_and_varies_across_epochs(oc):
    n = len(oc["keys"])
    runs = []
    for _ in range(2):
        chosen: dict[str, list[str]] = {}
        for batch in take(train_dataset(oc["train"]), (4 * n) // 4):
            for key, text, texts in zip(batch["key"], batch["text"], batch["texts"], strict=True):
                assert text in texts
                chosen.setdefault(key, []).append(text)
        runs.append(chosen)
    assert runs[0] == runs[1]
    assert any(len(set(texts)) > 1 for texts in runs[0].values())


def test_first_and_all_text_sampling_for_evaluation(oc):
    dataset = ShardDataset(
        oc["val"],
        batch_size=64,
        image_transform=ImageTransform(16),
        train=False,
        text_sampling="all",
    )
    (batch,) = list(dataset)
    for tar_sample, text, texts in zip(
        [s for url in oc["val"] for s in iter_tar_samples(url)],
        batch["text"],
        batch["texts"],
        strict=True,
    ):
        meta = json.loads(tar_sample["json"])
        assert texts == meta["texts"] and text == texts[0]
        assert meta["title"] == "" or text == meta["title"]


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_after_five_batches_continues_exactly(oc, messy, oversize, workers):
    # Includes broken samples, an over-size member and epoch boundaries.
    urls = oc["train"] + [oversize["tar"], messy["path"]]
    cap = {"max_member_bytes": MEMBER_CAP}
    loader = DataLoader(train_dataset(urls, **cap), batch_size=None, num_workers=workers)
    straight = take(loader, 10)
    resumed_loader = DataLoader(
        train_dataset(urls, start_batch=5, **cap), batch_size=None, num_workers=workers
    )
    resumed = take(resumed_loader, 5)
    assert sum(b["skipped"] for b in straight) > 0
    assert any("member_too_large" in b["skip_reasons"] for b in straight)
    for a, b in zip(straight[5:], resumed, strict=True):
        assert a["key"] == b["key"]
        assert a["text"] == b["text"]
        assert a["skip_reasons"] == b["skip_reasons"]
        assert torch.equal(a["image"], b["image"])
        assert torch.equal(a["text_input"], b["text_input"])


def assert_same_batches(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        for k in ("key", "text", "texts", "skip_reasons", "skip_shards"):
            assert a[k] == b[k], k
        for k in ("image", "text_input", "label"):
            assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("workers", [0, 2])
def test_in_memory_reader_gives_the_streaming_batches_and_resumes_like_it(
    oc, messy, oversize, undecodable, workers
):
    # Augmented, over three epochs, with samples skipped on their raw bytes (broken, no text,
    # bad JSON, no image, an over-size member) and one skipped only when decoded.
    urls = oc["train"] + [oversize["tar"], messy["path"], undecodable["path"]]
    cap = {"max_member_bytes": MEMBER_CAP}

    def batches(reader, start: int, n: int) -> list[dict]:
        dataset = train_dataset(urls, reader=reader, start_batch=start, **cap)
        return take(DataLoader(dataset, batch_size=None, num_workers=workers), n)

    n = 3 * (len(oc["keys"]) + 4 + 8 + 2) // 4
    streamed = batches(ShardDataset, 0, n)
    reasons = {r for b in streamed for r in b["skip_reasons"]}
    assert {"broken", "no_text", "bad_json", "no_image", "member_too_large"} <= reasons
    broken = [b["skip_shards"].get("broken", {}) for b in streamed]
    assert sum(shards.get("undecodable-000000.tar", 0) for shards in broken) >= 2  # per epoch
    assert_same_batches(batches(InMemoryShardDataset, 0, n), streamed)
    # A resumed position is the streaming reader's, whichever reader wrote it.
    assert_same_batches(batches(InMemoryShardDataset, 5, 10), batches(ShardDataset, 5, 10))


def test_in_memory_reader_reads_and_decodes_once(oc, monkeypatch):
    dataset = train_dataset(oc["train"], reader=InMemoryShardDataset)
    assert dataset.nbytes == sum(3 * s[0] * s[1] for s in dataset._shapes) > 0

    def refuse(*args, **kwargs):
        raise AssertionError("read or decoded after construction")

    monkeypatch.setattr(shards_module, "iter_tar_samples", refuse)
    monkeypatch.setattr(shards_module, "load_image", refuse)
    batches = take(dataset, 2 * len(oc["keys"]) // 4)  # two epochs
    assert {k for b in batches for k in b["key"]} == set(oc["keys"])


def test_bad_samples_are_skipped_and_counted_by_reason(messy):
    dataset = ShardDataset(
        messy["path"], batch_size=3, image_transform=ImageTransform(16), train=False
    )
    batches = list(dataset)
    assert [k for b in batches for k in b["key"]] == messy["good"]
    assert sum(b["skipped"] for b in batches) == 5
    reasons: dict[str, int] = {}
    for b in batches:
        for reason, count in b["skip_reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    assert reasons == {"broken": 2, "no_text": 1, "bad_json": 1, "no_image": 1}
    assert all((b["label"] == -1).all() for b in batches)


@pytest.mark.parametrize("kind", ["tar", "tar.gz"])
def test_oversize_member_is_skipped_unread_and_counted(oversize, monkeypatch, kind):
    extracted: list[str] = []
    extractfile = tarfile.TarFile.extractfile

    def recording(self, member, *args, **kwargs):
        extracted.append(member.name)
        return extractfile(self, member, *args, **kwargs)

    monkeypatch.setattr(tarfile.TarFile, "extractfile", recording)
    dataset = ShardDataset(
        oversize[kind],
        batch_size=2,
        image_transform=ImageTransform(16),
        train=False,
        max_member_bytes=MEMBER_CAP,
    )
    batches = list(dataset)
    assert [k for b in batches for k in b["key"]] == oversize["good"]
    assert [b["skip_reasons"] for b in batches] == [{}, {"member_too_large": 1}]
    big = oversize["big"]
    assert f"{big}.txt" not in extracted and f"{big}.jpg" in extracted  # its bytes never read
    assert eval_keys(oversize[kind], max_member_bytes=None) == sorted([big, *oversize["good"]])


@pytest.mark.parametrize("where", ["inside_a_block", "between_members"])
def test_truncated_shard_yields_what_it_can_and_counts_bad_shard(messy, tmp_path, where):
    data = Path(messy["path"]).read_bytes()
    with tarfile.open(messy["path"]) as tar:
        boundary = [m.offset for m in tar.getmembers() if m.name == "000000004.jpg"][0]
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: boundary + 100] if where == "inside_a_block" else data[:boundary])
    dataset = ShardDataset(
        [str(cut), messy["path"]], batch_size=50, image_transform=ImageTransform(16), train=False
    )
    (batch,) = list(dataset)
    assert batch["skip_reasons"]["bad_shard"] == 1
    # 000000003 was the sample being read when the shard broke: it may be incomplete.
    assert batch["key"] == messy["good"][:3] + messy["good"]


def test_training_reader_without_samples_raises(messy):
    dataset = ShardDataset(
        messy["path"], batch_size=2, image_transform=ImageTransform(16), rank=13, world_size=14
    )
    with pytest.raises(RuntimeError, match="reader 13 of 14 .* got no samples"):
        next(iter(dataset))
    assert eval_keys(messy["path"], rank=13, world_size=14) == []


def test_an_all_bad_shard_names_itself(tmp_path):
    # Every sample broken: the reader says which shard gave nothing usable.
    path = tmp_path / "all-bad-000000.tar"
    with tarfile.open(path, "w") as tar:
        for i in range(3):
            for ext, data in (("jpg", b"not a jpeg"), ("txt", b"a caption")):
                info = tarfile.TarInfo(f"k{i}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    dataset = ShardDataset(str(path), batch_size=2, image_transform=ImageTransform(16))
    with pytest.raises(
        RuntimeError, match=r"no usable sample in a whole epoch of all-bad-000000.tar"
    ):
        next(iter(dataset))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"text_sampling": "sometimes"}, ValueError, "text_sampling must be one of"),
        ({"rank": 2, "world_size": 2}, ValueError, r"rank must be in \[0, world_size=2\)"),
        ({"batch_size": 0}, ValueError, "batch_size must be a positive int"),
    ],
)
def test_bad_dataset_arguments_are_rejected(messy, kwargs, error, message):
    args = {"batch_size": 2, "image_transform": ImageTransform(16), **kwargs}
    with pytest.raises(error, match=message):
        ShardDataset(messy["path"], **args)
