import math

import pytest
import torch

from clippo.eval.zeroshot import (
    build_zeroshot_classifier,
    canonicalize_text,
    load_prompts,
    zeroshot_accuracy,
)


def _lookup_encoder(table: dict[str, list[float]], calls: list[list[str]] | None = None):
    def encode_text(texts: list[str]) -> torch.Tensor:
        if calls is not None:
            calls.append(list(texts))
        return torch.tensor([table[t] for t in texts])

    return encode_text


def test_imagenet_prompts_are_clips_1000_classes_and_80_templates():
    classnames, templates = load_prompts("imagenet")
    assert len(classnames) == 1000
    assert classnames[:3] == ["tench", "goldfish", "great white shark"]
    assert classnames[-1] == "toilet paper"
    assert len(templates) == 80 and len(set(templates)) == 80
    assert templates[0] == "a bad photo of a {}."
    assert templates[-1] == "a tattoo of the {}."
    assert all(t.count("{}") == 1 for t in templates)
    assert "{}" not in templates


def test_openclipart_prompts_map_22_folders_to_readable_names():
    classnames, templates = load_prompts("openclipart")
    assert len(classnames) == 22
    assert classnames[0] == "animals"
    assert "signs and symbols" in classnames
    assert not any("_" in c for c in classnames)
    assert 6 <= len(templates) <= 10
    assert all(t.count("{}") == 1 for t in templates)


def test_load_prompts_canonicalize_strips_punctuation_but_keeps_placeholder():
    _, templates = load_prompts("imagenet", canonicalize=True)
    assert templates[0] == "a bad photo of a {}"
    assert "a closeup photo of a {}" in templates


def test_load_prompts_unknown_name_raises():
    with pytest.raises(ValueError, match="unknown prompt set 'nope'.*imagenet"):
        load_prompts("nope")


def test_canonicalize_text_matches_big_vision_rules():
    assert canonicalize_text("Jack-o'-Lantern") == "jackolantern"
    assert canonicalize_text("  signs__and_symbols ") == "signs and symbols"
    assert canonicalize_text("a {} in a video-game.", keep="{}") == "a {} in a videogame"
    assert canonicalize_text("a {} in a video-game.") == "a in a videogame"


def test_classifier_averages_normalised_prompt_embeddings_and_renormalises():
    table = {
        # "cat": unnormalised prompts (norms 3 and 0.5) average to the 45-degree direction only
        # if each prompt is normalised before averaging.
        "a cat.": [3.0, 0.0, 0.0],
        "the cat.": [0.0, 0.5, 0.0],
        # "dog": mean of (0,0,1) and (0,1,1)/sqrt(2) points at 22.5 degrees from the z axis.
        "a dog.": [0.0, 0.0, 2.0],
        "the dog.": [0.0, 4.0, 4.0],
    }
    clf = build_zeroshot_classifier(_lookup_encoder(table), ["cat", "dog"], ["a {}.", "the {}."])
    s, c = math.sin(math.pi / 8), math.cos(math.pi / 8)
    expected = torch.tensor([[1 / math.sqrt(2), 1 / math.sqrt(2), 0.0], [0.0, s, c]])
    assert clf.dtype == torch.float32
    torch.testing.assert_close(clf, expected)


def test_classifier_batches_prompts_in_class_major_order():
    prompts = ["p x", "q x", "p y", "q y", "p z", "q z"]
    table = {p: [float(i), 1.0] for i, p in enumerate(prompts)}
    calls: list[list[str]] = []
    templates = ["p {}", "q {}"]
    clf = build_zeroshot_classifier(_lookup_encoder(table, calls), list("xyz"), templates, 4)
    assert calls == [prompts[:4], prompts[4:]]
    whole = build_zeroshot_classifier(_lookup_encoder(table), list("xyz"), templates, 100)
    torch.testing.assert_close(clf, whole)


def test_classifier_rejects_template_without_placeholder():
    with pytest.raises(ValueError, match="exactly one '\\{\\}' placeholder.*'a photo'"):
        build_zeroshot_classifier(_lookup_encoder({}), ["cat"], ["a photo"])


def test_classifier_rejects_encoder_with_wrong_output_shape():
    def encode_text(texts):
        return torch.zeros(len(texts) + 1, 4)

    with pytest.raises(ValueError, match="encode_text returned shape \\(3, 4\\) for 2 texts"):
        build_zeroshot_classifier(encode_text, ["a", "b"], ["{}"])


def test_accuracy_top1_and_topk_hand_computed():
    classifier = torch.eye(6)
    # Scores are the image vectors themselves: class order by score is explicit.
    images = torch.tensor(
        [
            [0.9, 0.1, 0.0, 0.0, 0.0, 0.0],  # label 0: rank 0
            [0.5, 0.4, 0.3, 0.2, 0.1, 0.0],  # label 4: rank 4
            [0.5, 0.4, 0.3, 0.2, 0.1, 0.0],  # label 5: rank 5
            [0.3, 0.2, 0.9, 0.0, 0.0, 0.0],  # label 1: rank 2
        ]
    )
    labels = torch.tensor([0, 4, 5, 1])
    result = zeroshot_accuracy(images, labels, classifier, topk=(1, 2, 3, 5))
    assert result == {"top1": 0.25, "top2": 0.25, "top3": 0.5, "top5": 0.75}


def test_accuracy_with_real_classifier_finds_nearest_class():
    table = {"a cat.": [1.0, 0.0], "a dog.": [0.0, 1.0]}
    clf = build_zeroshot_classifier(_lookup_encoder(table), ["cat", "dog"], ["a {}."])
    images = torch.tensor([[0.8, 0.6], [0.6, 0.8], [0.6, 0.8]])
    assert zeroshot_accuracy(images, torch.tensor([0, 1, 0]), clf, topk=(1,)) == {
        "top1": pytest.approx(2 / 3)
    }


def test_accuracy_ties_count_against_the_image():
    # A collapsed model: every class scores the same, so no image is correctly ranked first.
    classifier = torch.ones(3, 2) / math.sqrt(2)
    images = torch.ones(4, 2)
    result = zeroshot_accuracy(images, torch.tensor([0, 1, 2, 0]), classifier, topk=(1, 3))
    assert result == {"top1": 0.0, "top3": 1.0}


def test_accuracy_topk_larger_than_number_of_classes_raises():
    with pytest.raises(ValueError, match="topk=\\(1, 5\\) must lie in \\[1, 3\\]"):
        zeroshot_accuracy(torch.eye(3), torch.tensor([0, 1, 2]), torch.eye(3))


@pytest.mark.parametrize(
    ("images", "labels", "classifier", "message"),
    [
        (torch.eye(3), torch.tensor([0, 1]), torch.eye(3), "labels must have shape \\(3,\\)"),
        (torch.eye(3), torch.tensor([0, 1, 3]), torch.eye(3), "labels must lie in \\[0, 3\\)"),
        (torch.eye(3), torch.tensor([0.0, 1, 2]), torch.eye(3), "integer class indices"),
        (torch.eye(3), torch.tensor([0, 1, 2]), torch.eye(3, 4), "dims differ"),
        (torch.ones(3), torch.tensor([0, 1, 2]), torch.eye(3), "must be 2-D"),
    ],
)
def test_accuracy_bad_input_raises(images, labels, classifier, message):
    with pytest.raises(ValueError, match=message):
        zeroshot_accuracy(images, labels, classifier, topk=(1,))
