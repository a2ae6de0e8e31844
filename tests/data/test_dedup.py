"""De-duplication keys and rules across the member / non-member boundary."""

import hashlib
from types import SimpleNamespace

import numpy as np
import pytest

from mia.data.dedup import codes, dedup_key, dedup_rules, index_keys, normalise_caption
from mia.validate import ConfigError


def index(captions, urls, sha256=None):
    return SimpleNamespace(captions=captions, urls=urls, sha256=sha256)


def test_a_caption_is_keyed_without_case_digits_punctuation_or_stop_words():
    assert normalise_caption("  The 3 RED cars, parked on a street!  ") == "red cars parked street"
    assert normalise_caption("A photo of it") == normalise_caption("photo, of IT.") == "photo"


def test_rules_default_to_caption_and_url_and_bad_lists_are_refused():
    assert dedup_rules({}) == ("caption", "url")
    assert dedup_rules({"dedup": None}) == () == dedup_rules({"dedup": []})
    assert dedup_rules({"dedup": ["image", "caption"]}) == ("image", "caption")
    for bad in ("caption", ["caption", "caption"], ["pixels"]):
        with pytest.raises(ConfigError, match="data.split.dedup"):
            dedup_rules({"dedup": bad})


def test_codes_share_a_key_across_indexes_and_an_empty_url_or_hash_is_no_key():
    a = index(["A red car.", "blue sky"], ["http://x", ""], ["h1", ""])
    b = index(["red car", "green"], ["", "http://x"], ["h2", "h1"])
    ca, cb = codes([a, b], ("caption", "url", "image"))
    assert ca["caption"][0] == cb["caption"][0] and ca["caption"][1] != cb["caption"][1]
    assert ca["url"][0] == cb["url"][1] >= 0 and ca["url"][1] == cb["url"][0] == -1
    assert ca["image"][0] == cb["image"][1] >= 0 and ca["image"][1] == -1
    # an empty normalised caption is a key, shared by every caption that normalises to it
    c, d = codes([index(["the", "a"], ["", ""]), index(["of", "x y"], ["", ""])], ("caption",))
    assert c["caption"][0] == c["caption"][1] == d["caption"][0] >= 0


def test_one_pairs_key_is_the_key_its_index_gives_it():
    image = b"\x89PNG pixels"
    idx = index(["Two dogs, 1 ball"], ["http://d"], [hashlib.sha256(image).hexdigest()])
    for rule in ("caption", "url", "image"):
        assert dedup_key(rule, "Two dogs, 1 ball", "http://d", image) == index_keys(idx, rule)[0]
    assert dedup_key("url", "c", "", image) is None


def test_the_image_rule_needs_hashes():
    with pytest.raises(ConfigError, match="image hashes"):
        index_keys(index(["c"], ["u"]), "image")
    assert np.array_equal(index_keys(index(["c"], ["u"]), "url"), ["u"])
