"""kv_quant config group: one YAML per scheme, validated once with the key and the choices named."""

from __future__ import annotations

import pytest

from kvlab.config_check import check_config
from kvlab.kv_quant_format import SCHEMES, KVQuantConfig
from kvlab.paperlib.jobs import compose


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_scheme_composes_and_validates(scheme: str) -> None:
    cfg = compose([f"kv_quant={scheme}"])
    assert cfg["kv_quant"]["name"] == scheme
    check_config(cfg)
    assert KVQuantConfig.from_config(cfg).name == scheme


def test_default_is_none_and_knob_defaults() -> None:
    assert KVQuantConfig.from_config(compose([])).name == "none"
    assert KVQuantConfig.from_config(compose(["kv_quant=fp8_e4m3"])).scale == "fixed"
    k = KVQuantConfig.from_config(compose(["kv_quant=kivi2"]))
    assert (k.group_size, k.residual) == (32, 128)
    assert KVQuantConfig.from_config(compose(["kv_quant=int4"])).group_size == 32


@pytest.mark.parametrize("raw,match", [
    ({"name": "int3"}, r"kv_quant='int3' is unknown; choose one of: none, fp8_e4m3, fp8_e5m2, int8, int4, kivi2"),
    ({"name": "fp8_e4m3", "scale": "auto"}, r"kv_quant.scale='auto' is unknown; choose one of: fixed, calibrated"),
    ({"name": "int8", "group_size": 32}, r"kv_quant.group_size is not a knob of kv_quant=int8"),
    ({"name": "int4", "group_size": 0}, r"kv_quant.group_size=0: must be an integer >= 1"),
    ({"name": "kivi2", "residual_pool_fraction": 2}, r"kv_quant.residual_pool_fraction=2"),
])
def test_bad_scheme_or_knob_names_key_and_choices(raw, match) -> None:
    cfg = compose([]) | {"kv_quant": raw}
    with pytest.raises(ValueError, match=match):
        check_config(cfg)


def test_group_must_divide_head_dim_and_block() -> None:
    q = KVQuantConfig.parse({"name": "kivi2", "group_size": 12})
    with pytest.raises(ValueError, match=r"^kv_quant\.group_size=12 must divide head_dim=64 \(kv_quant=kivi2\)$"):
        q.bytes_per_block(2, 2, 64, 2, 48)
    with pytest.raises(ValueError, match=r"^kv_quant\.group_size=32 must divide allocator\.block_size=48 "
                                         r"\(kivi2 key groups live inside one block\)$"):
        KVQuantConfig.parse({"name": "kivi2", "group_size": 32}).token_group(48)
