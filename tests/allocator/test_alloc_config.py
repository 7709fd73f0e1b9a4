"""Config files match the registry, and bad options fail loudly naming the key and the choices."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kvlab.allocator import ALLOCATORS, build_allocator

CONF = Path(__file__).resolve().parents[2] / "conf" / "allocator"


def test_every_allocator_has_a_matching_yaml() -> None:
    for name in ALLOCATORS.names():
        cfg = yaml.safe_load((CONF / f"{name}.yaml").read_text())
        assert cfg["name"] == name


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_yaml_builds_a_registered_allocator(path: Path) -> None:
    cfg = yaml.safe_load(path.read_text())
    assert cfg["name"] == path.stem and cfg["name"] in ALLOCATORS
    alloc = build_allocator(cfg, num_blocks=64, max_model_len=2048, num_cpu_blocks=8)
    assert alloc.num_blocks == 64 and alloc.block_size == cfg["block_size"]  # the engine's count wins
    alloc.check_invariants()


def test_unknown_option_names_key_and_allowed() -> None:
    with pytest.raises(ValueError, match=r"'reserve'.*reservation"):
        ALLOCATORS.build("contiguous", 8, 16, 128, reserve="max")
    with pytest.raises(ValueError, match=r"'reservation'.*allowed options: \(none\)"):
        ALLOCATORS.build("paged", 8, 16, 128, reservation="max")


def test_bad_option_value_names_choices() -> None:
    with pytest.raises(ValueError, match=r"reservation='huge'.*max, pow2, oracle"):
        ALLOCATORS.build("contiguous", 8, 16, 128, reservation="huge")
    with pytest.raises(ValueError, match=r"placement='best_fit'.*buddy, first_fit"):
        build_allocator({"name": "contiguous", "placement": "best_fit"}, 8, 128)


@pytest.mark.parametrize("name", ALLOCATORS.names())
@pytest.mark.parametrize("bs", [0, 257, 3.5, "16"])
def test_bad_block_size(name: str, bs: object) -> None:
    with pytest.raises(ValueError, match=r"block_size must be an integer in 1\.\.256"):
        ALLOCATORS.build(name, 8, bs, 128)


def test_bad_geometry_and_unknown_name() -> None:
    with pytest.raises(ValueError, match="num_blocks"):
        ALLOCATORS.build("paged", -1, 16, 128)
    with pytest.raises(ValueError, match="max_model_len"):
        ALLOCATORS.build("paged", 8, 16, 0)
    with pytest.raises(ValueError, match="choose one of: contiguous, paged, prefix"):
        build_allocator({"name": "slab"}, 8, 128)


@pytest.mark.parametrize(("key", "value", "choices"), [
    ("index", "trie", r"hash, radix"),
    ("eviction", "random", r"lru, fifo, lfu, lru-depth"),
    ("hash_fn", "md5", r"builtin, sha256"),
])
def test_prefix_bad_index_policy_or_hash_names_key_and_choices(key: str, value: str, choices: str) -> None:
    with pytest.raises(ValueError, match=rf"{key}='{value}'.*choose one of: {choices}"):
        build_allocator({"name": "prefix", key: value}, 8, 128)


def test_prefix_options_reach_the_index() -> None:
    a = build_allocator({"name": "prefix", "index": "radix", "eviction": "lfu"}, 8, 128)
    assert a.index.name == "radix" and a.index.policy.name == "lfu"
    assert ALLOCATORS.build("paged", 8, 16, 128).index is None


def test_paged_index_by_name_points_to_prefix() -> None:
    with pytest.raises(ValueError, match=r"allocator=prefix allocator.index=hash\|radix"):
        build_allocator({"name": "paged", "index": "radix"}, 8, 128)
