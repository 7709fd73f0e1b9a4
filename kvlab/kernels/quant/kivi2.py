"""``kv_quant=kivi2``: KIVI's 2-bit cache in a paged pool, with a full-precision residual window.

Codes: 2 bits, four per byte (channel ``4i + j`` in bits ``2j``). Keys are quantized per channel
over groups of ``gk = min(group_size, block_size)`` tokens of one block (scale and zero per
(group, head, channel)); values per token over groups of ``group_size`` channels. Groups never
span blocks, so a block's codes depend on that block only and every block operation stays a copy.

Residual window (design, docs/kernels.md "Quantized KV formats"): a block is either *open* — its
K/V live in full precision in a slot of the cache's residual pool (``floor(num_blocks *
residual_pool_fraction)`` slots, each block paying its share) — or *closed* (2-bit codes). Once
per step (at layer 0's write) a plan is made from the step's spans: blocks the step writes stay
open while any of their positions is among the sequence's last ``residual`` tokens; a block
whose positions all fell out of the window is closed (quantized from its slot). A write into a
closed block reopens it (its codes are dequantized into a slot). When the pool is full, the
least recently written open block is closed early; when even that cannot make room, the written
block is quantized at once ("early", counted in ``early_quantized``). Openness is a property of
the block, so every reader of a shared block reads the same bytes; before a copy-on-write or a
swap-out the source block is closed, so copies and swaps move only codes and metadata.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch

from kvlab.kernels.kv_cache import BlockMetadata, LayerKV
from kvlab.kernels.quant import register_scheme
from kvlab.kernels.quant.base import QuantScheme
from kvlab.kernels.quant.int4 import dequantize_groups, dequantize_minmax, quantize_groups, quantize_minmax

LEVELS = 4


def pack2(codes: torch.Tensor) -> torch.Tensor:
    """[..., d] codes 0..3 -> [..., d/4] bytes."""
    return codes[..., 0::4] | (codes[..., 1::4] << 2) | (codes[..., 2::4] << 4) | (codes[..., 3::4] << 6)


def unpack2(packed: torch.Tensor) -> torch.Tensor:
    return torch.stack([(packed >> s) & 3 for s in (0, 2, 4, 6)], dim=-1).flatten(-2)


def quantize_keys(x: torch.Tensor, gk: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Blocks ``x`` [n, B, h, d] -> (codes [n, B, h, d] 0..3, scale and zero [n, B/gk, h, d])."""
    n, B, h, d = x.shape
    codes, scale, zero = quantize_minmax(x.view(n, B // gk, gk, h, d), 2, LEVELS)
    return codes.view(n, B, h, d), scale, zero


def dequantize_keys(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    n, B, h, d = codes.shape
    gk = B // scale.shape[1]
    return dequantize_minmax(codes.view(n, B // gk, gk, h, d), scale, zero, 2).view(n, B, h, d)


@register_scheme
class Kivi2Scheme(QuantScheme):
    names = ("kivi2",)

    def __init__(self, spec):
        super().__init__(spec)
        self.gk = self.cfg.token_group(spec.block_size)
        self.gv = self.cfg.channel_group(spec.head_dim)
        self.residual = self.cfg.residual
        self.pool: torch.Tensor | None = None
        self.slot_of: dict[int, int] = {}
        self.lru: OrderedDict[int, None] = OrderedDict()  # open blocks, least recently written first
        self.free_slots: list[int] = []
        self.early_quantized = 0
        self._plan: dict[str, Any] | None = None
        self._plan_key: Any = None

    @classmethod
    def layout(cls, cfg, num_kv_heads, head_dim, block_size):
        gk, gv = cfg.token_group(block_size), cfg.channel_group(head_dim)
        if head_dim % 4:
            raise ValueError(f"kv_quant=kivi2 needs head_dim divisible by 4, got {head_dim}")
        kshape = (block_size // gk, num_kv_heads, head_dim)
        vshape = (block_size, num_kv_heads, head_dim // gv)
        meta = [BlockMetadata("k_scale", kshape, torch.float32, 1), BlockMetadata("k_zero", kshape, torch.float32, 1),
                BlockMetadata("v_scale", vshape, torch.float32, 1), BlockMetadata("v_zero", vshape, torch.float32, 1)]
        return torch.uint8, head_dim // 4, meta

    def attach(self, cache):
        super().attach(cache)
        s = self.spec
        n = self.cfg.residual_blocks(cache.num_blocks)
        self.pool = torch.zeros(s.num_layers, 2, n, s.block_size, s.num_kv_heads, s.head_dim, dtype=s.dtype,
                                device=cache.device)
        self.free_slots = list(range(n - 1, -1, -1))
        self.slot_dev = torch.full((cache.num_blocks,), -1, dtype=torch.long, device=cache.device)

    def state_nbytes(self) -> int:
        return 0 if self.pool is None else self.pool.nbytes

    @property
    def num_open(self) -> int:
        return len(self.slot_of)

    # -- block codes ------------------------------------------------------------------------
    def _store(self, layer: LayerKV, half: int, blocks: torch.Tensor, x: torch.Tensor) -> None:
        """Quantize blocks ``x`` [n, B, h, d] fp32 into ``blocks`` of ``layer`` (codes + metadata)."""
        data = layer.k if half == 0 else layer.v
        if half == 0:
            codes, scale, zero = quantize_keys(x, self.gk)
            names = ("k_scale", "k_zero")
        else:
            codes, scale, zero = quantize_groups(x, self.gv, LEVELS)
            names = ("v_scale", "v_zero")
        data.index_copy_(0, blocks, pack2(codes))
        layer.metadata[names[0]][0].index_copy_(0, blocks, scale)
        layer.metadata[names[1]][0].index_copy_(0, blocks, zero)

    def _dequant(self, layer: LayerKV, half: int, blocks: torch.Tensor) -> torch.Tensor:
        """fp32 [n, B, h, d] of the codes of ``blocks`` (open or not)."""
        data = layer.k if half == 0 else layer.v
        codes = unpack2(data.index_select(0, blocks))
        if half == 0:
            return dequantize_keys(codes, layer.metadata["k_scale"][0].index_select(0, blocks),
                                   layer.metadata["k_zero"][0].index_select(0, blocks))
        return dequantize_groups(codes, layer.metadata["v_scale"][0].index_select(0, blocks),
                                 layer.metadata["v_zero"][0].index_select(0, blocks), self.gv)

    def read(self, layer: LayerKV, blocks: torch.Tensor, half: int) -> torch.Tensor:
        flat = blocks.reshape(-1)
        x = self._dequant(layer, half, flat)
        if self.slot_of:
            assert self.pool is not None
            slots = self.slot_dev.index_select(0, flat)
            fp = self.pool[layer.index, half].index_select(0, slots.clamp(min=0)).float()
            x = torch.where((slots >= 0)[:, None, None, None], fp, x)
        B, h, d = x.shape[1:]
        return x.to(self.spec.dtype).view(*blocks.shape[:-1], blocks.shape[-1] * B, h, d)

    # -- state transitions (every layer) --------------------------------------------------------
    def _release(self, b: int) -> int:
        s = self.slot_of.pop(b)
        self.lru.pop(b, None)
        self.free_slots.append(s)
        self.slot_dev[b] = -1
        return s

    def _close_now(self, blocks: Sequence[int]) -> None:
        """Quantize open ``blocks`` from their slots in every layer and free the slots."""
        blocks = [b for b in blocks if b in self.slot_of]
        if not blocks:
            return
        assert self.pool is not None
        bt = torch.tensor(blocks, dtype=torch.long, device=self.cache.device)
        st = torch.tensor([self.slot_of[b] for b in blocks], dtype=torch.long, device=self.cache.device)
        for layer in self.cache.layers:
            for half in (0, 1):
                self._store(layer, half, bt, self.pool[layer.index, half].index_select(0, st).float())
        for b in blocks:
            self._release(b)

    def before_copy(self, pairs):
        self._close_now([s for s, _ in pairs])
        for _, d in pairs:
            if d in self.slot_of:
                self._release(d)

    def before_swap(self, pairs, to_cpu):
        if to_cpu:
            self._close_now([s for s, _ in pairs])
        else:
            for _, d in pairs:
                if d in self.slot_of:
                    self._release(d)

    # -- the step's plan (once, at layer 0) ----------------------------------------------------
    def _make_plan(self, spans: Sequence[tuple[int, int, Sequence[int]]], slot_mapping: torch.Tensor) -> dict:
        B, R = self.spec.block_size, self.residual
        written: dict[int, bool] = {}  # block -> closes this step
        close: dict[int, None] = {}
        for start, n, table in spans:
            if n <= 0:
                continue
            ctx = start + n
            edge = max(0, (ctx - R) // B)  # blocks j < edge lie wholly outside the window
            for j in range(start // B, (ctx - 1) // B + 1):
                written[table[j]] = j < edge
            for j in range(max(0, (start - R) // B), min(edge, start // B)):
                if table[j] in self.slot_of:
                    close[table[j]] = None
        trans = [b for b, c in written.items() if c]
        stay = [b for b, c in written.items() if not c]
        trans_open = [b for b in trans if b in self.slot_of]
        trans_slots = [self.slot_of[b] for b in trans_open]
        close_blocks = list(close)
        close_slots = [self.slot_of[b] for b in close_blocks]
        for b in close_blocks + trans_open:
            self._release(b)
        stay_set = set(stay)
        reopen_blocks: list[int] = []
        reopen_slots: list[int] = []
        for b in stay:
            if b in self.slot_of:
                self.lru.move_to_end(b)
                continue
            if not self.free_slots:  # evict the least recently written open block not in this step
                victim = next((o for o in self.lru if o not in stay_set), None)
                if victim is not None:
                    close_blocks.append(victim)
                    close_slots.append(self._release(victim))
                    self.early_quantized += 1
            if not self.free_slots:
                trans.append(b)
                self.early_quantized += 1
                continue
            s = self.free_slots.pop()
            self.slot_of[b] = s
            self.lru[b] = None
            self.slot_dev[b] = s
            reopen_blocks.append(b)
            reopen_slots.append(s)
        tpos = {b: i for i, b in enumerate(trans)}
        open_tok, open_dst, trans_tok, trans_dst = [], [], [], []
        for t, slot in enumerate(slot_mapping.tolist()):
            b, row = divmod(slot, B)
            if b in tpos:
                trans_tok.append(t)
                trans_dst.append(tpos[b] * B + row)
            else:
                open_tok.append(t)
                open_dst.append(self.slot_of[b] * B + row)
        dev = self.cache.device

        def lt(x: list[int]) -> torch.Tensor:
            return torch.tensor(x, dtype=torch.long, device=dev)

        return {"close": (lt(close_blocks), lt(close_slots)), "reopen": (lt(reopen_blocks), lt(reopen_slots)),
                "trans": lt(trans), "trans_open": (lt([tpos[b] for b in trans_open]), lt(trans_slots)),
                "open": (lt(open_tok), lt(open_dst)), "trans_w": (lt(trans_tok), lt(trans_dst))}

    def write(self, layer: LayerKV, k: torch.Tensor, v: torch.Tensor, slot_mapping: torch.Tensor,
              meta: Any = None) -> None:
        """Quantize-on-write with the residual window (see the module docstring). Mutates the cache."""
        if self._plan is None or self._plan_key is not meta or layer.index == 0:
            spans = getattr(meta, "spans", None)
            if spans is None:
                raise ValueError("kv_quant=kivi2 needs the step's spans (metadata.spans) to place the "
                                 "residual window")
            self._plan, self._plan_key = self._make_plan(spans, slot_mapping), meta
        p = self._plan
        assert self.pool is not None
        h, d = k.shape[1], k.shape[2]
        for half, x in ((0, k), (1, v)):
            pool = self.pool[layer.index, half]
            tmp = None
            if p["trans"].numel():
                tmp = self._dequant(layer, half, p["trans"])
                pos, slots = p["trans_open"]
                if pos.numel():
                    tmp[pos] = pool.index_select(0, slots).float()
            cb, cs = p["close"]
            if cb.numel():
                self._store(layer, half, cb, pool.index_select(0, cs).float())
            rb, rs = p["reopen"]
            if rb.numel():
                pool[rs] = self._dequant(layer, half, rb).to(pool.dtype)
            tok, dst = p["open"]
            if tok.numel():
                pool.view(-1, h, d).index_copy_(0, dst, x.index_select(0, tok).to(pool.dtype))
            if tmp is not None:
                tok, dst = p["trans_w"]
                tmp.view(-1, h, d).index_copy_(0, dst, x.index_select(0, tok).float())
                self._store(layer, half, p["trans"], tmp)
