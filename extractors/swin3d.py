"""Video Swin-T with gated relative position bias (GRPB) and the IP-NLR head: the FAST-VQA network.

FAST-VQA (Wu et al., ECCV 2022) and FasterVQA (Wu et al., TPAMI 2023; repo
VQAssessment/FAST-VQA-and-FasterVQA, ``fastvqa/models/swin_backbone.py``, ``head.py`` and
``evaluator.py``) feed a Kinetics-400 Video Swin-T with *fragments*: a 7x7 mosaic of 32x32 patches
cut from different places of the frame. Neighbouring tokens of the mosaic may come from distant
parts of the picture, so the paper's gated relative position bias gives each attention pair one of
two learned bias tables depending on whether the two tokens lie in the same fragment:

    bias = relative_position_bias * gate + fragment_position_bias * (1 - gate)

where ``gate`` is, exactly as in the official code, the L1 distance between the two tokens'
fragment coordinates (0 inside one fragment, 1 for adjacent fragments, and larger, up to 6 in the
third stage, where a 7-token window spans up to four 2-token fragments; the official network was
trained with these values, so they are kept rather than clipped to a 0/1 gate). Stages 1-3 have the
fragment table; stage 4, whose tokens are one per fragment, has only the ordinary table.

The head (IP-NLR, ``VQAHead``) is two 1x1x1 convolutions with a GELU between them, applied to every
token of the last stage: a local quality map whose mean is the clip's quality score.

Module and parameter names follow the official ``DiViDeAddEvaluator(backbone_size="swin_tiny_grpb",
backbone_preserve_keys="fragments")`` (``fragments_backbone.*``, ``vqa_head.*``) so its checkpoints
load strictly. This is our own implementation: the bias and the shifted-window mask (-100 as in the
official code) go to ``scaled_dot_product_attention`` as one additive mask, and the per-geometry gate
and mask tables are cached compactly (uint8/bool) instead of as int64 coordinate differences.
"""

from __future__ import annotations

from functools import lru_cache
from math import prod

import torch
import torch.nn.functional as F
from torch import nn

Triple = tuple[int, int, int]

WINDOW: Triple = (8, 7, 7)
"""Window of the Kinetics Swin-T (``window877``) the checkpoints were trained from; it sizes the
bias tables and ``relative_position_index`` whatever window a forward pass uses."""
FRAGMENTS_HW = 7
"""Fragment grid the gate is computed for: the official ``global_position_index`` default (1, 7, 7)."""
EMBED_DIM = 96
DEPTHS = (2, 2, 6, 2)
HEADS = (3, 6, 12, 24)
FRAG_BIAS = (True, True, True, False)
PATCH: Triple = (2, 4, 4)
SHIFT_MASK = -100.0
"""What the official ``compute_mask`` adds between tokens from different regions of a shifted window."""


def relative_position_index(window: Triple) -> torch.Tensor:
    """Index into the ``(2Wd-1)(2Wh-1)(2Ww-1)`` bias table for every pair of tokens of a window."""
    coords = torch.stack(torch.meshgrid(*(torch.arange(w) for w in window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    rel = rel + torch.tensor([w - 1 for w in window])
    strides = torch.tensor([(2 * window[1] - 1) * (2 * window[2] - 1), 2 * window[2] - 1, 1])
    return (rel * strides).sum(-1)


def effective_window(size: Triple, window: Triple, shift: Triple) -> tuple[Triple, Triple]:
    """Swin's rule: an axis no longer than the window is one window and is not shifted."""
    win = tuple(s if s <= w else w for s, w in zip(size, window))
    sh = tuple(0 if s <= w else h for s, w, h in zip(size, window, shift))
    return win, sh  # type: ignore[return-value]


def window_partition(x: torch.Tensor, window: Triple) -> torch.Tensor:
    """``(B, D, H, W, C)`` → ``(B, nW, N, C)``, windows in (d, h, w) raster order."""
    b, d, h, w, c = x.shape
    wd, wh, ww = window
    x = x.view(b, d // wd, wd, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 5, 2, 4, 6, 7)
    return x.reshape(b, -1, wd * wh * ww, c)


def window_reverse(windows: torch.Tensor, window: Triple, size: Triple) -> torch.Tensor:
    b, c = windows.shape[0], windows.shape[-1]
    (d, h, w), (wd, wh, ww) = size, window
    x = windows.view(b, d // wd, h // wh, w // ww, wd, wh, ww, c).permute(0, 1, 4, 2, 5, 3, 6, 7)
    return x.reshape(b, d, h, w, c)


def _windowed(grid: torch.Tensor, window: Triple, shift: Triple) -> torch.Tensor:
    """A per-token ``(D, H, W, k)`` map, rolled like the features and cut into ``(nW, N, k)``."""
    rolled = torch.roll(grid, shifts=tuple(-s for s in shift), dims=(0, 1, 2))
    return window_partition(rolled[None], window)[0]


@lru_cache(maxsize=32)
def fragment_gate(size: Triple, window: Triple, shift: Triple, device: str) -> torch.Tensor:
    """``(nW, N, N)`` uint8: L1 distance between the fragment coordinates of each token pair.

    Fragment coordinates are the official nearest-neighbour map of the 1x7x7 fragment grid onto
    the token grid (token ``i`` of ``n`` lies in fragment ``i * 7 // n``); the temporal grid has one
    fragment, so only the spatial distance counts.
    """
    d, h, w = size
    rows = torch.arange(h) * FRAGMENTS_HW // h
    cols = torch.arange(w) * FRAGMENTS_HW // w
    grid = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), -1).expand(d, h, w, 2)
    coords = _windowed(grid.to(torch.int8), window, shift)
    rows, cols = coords[..., 0], coords[..., 1]  # int8 keeps the (nW, N, N) pairs small
    gate = (rows[:, :, None] - rows[:, None, :]).abs() + (cols[:, :, None] - cols[:, None, :]).abs()
    return gate.to(torch.uint8).to(device)


@lru_cache(maxsize=32)
def shift_mask(size: Triple, window: Triple, shift: Triple, device: str) -> torch.Tensor:
    """``(nW, N, N)`` bool: pairs that the cyclic shift brought together from different regions."""
    region = torch.zeros(size, dtype=torch.long)
    count = 0
    for ds in _regions(window[0], shift[0]):
        for hs in _regions(window[1], shift[1]):
            for ws in _regions(window[2], shift[2]):
                region[ds, hs, ws] = count
                count += 1
    labels = window_partition(region[None, ..., None], window)[0, ..., 0]
    return (labels[:, :, None] != labels[:, None, :]).to(device)


def _regions(window: int, shift: int) -> tuple[slice, slice, slice]:
    return slice(-window), slice(-window, -shift), slice(-shift, None)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention3D(nn.Module):
    """Multi-head self-attention inside each window, with the (gated) relative position bias."""

    def __init__(self, dim: int, heads: int, frag_bias: bool) -> None:
        super().__init__()
        self.heads = heads
        table = prod(2 * w - 1 for w in WINDOW)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(table, heads))
        if frag_bias:
            self.fragment_position_bias_table = nn.Parameter(torch.zeros(table, heads))
        self.register_buffer("relative_position_index", relative_position_index(WINDOW))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def pair_index(self, window: Triple) -> torch.Tensor:
        """Table rows for a window smaller than :data:`WINDOW`: the official code slices the full
        index as ``(Wd, Wh, Ww, Wd, Wh, Ww)``, which keeps each pair's true offset."""
        if window == WINDOW:
            return self.relative_position_index
        full = self.relative_position_index.view(*WINDOW, *WINDOW)
        d, h, w = window
        return full[:d, :h, :w, :d, :h, :w].reshape(d * h * w, d * h * w)

    def bias(self, window: Triple, gate: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``(nW or 1, heads, N, N)`` additive attention bias."""
        index = self.pair_index(window)
        n = index.shape[0]
        rel = self.relative_position_bias_table[index.reshape(-1)].view(n, n, -1).permute(2, 0, 1)[None]
        if hasattr(self, "fragment_position_bias_table"):
            frag = self.fragment_position_bias_table[index.reshape(-1)].view(n, n, -1).permute(2, 0, 1)[None]
            # rel * g + frag * (1 - g), the official form, in one multiply and one add
            rel = (rel - frag) * gate[:, None].to(rel.dtype) + frag
        if mask is not None:
            rel = rel + mask[:, None].to(rel.dtype) * SHIFT_MASK
        return rel

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, nW, N, C)``; ``bias`` broadcasts to ``(B, nW, heads, N, N)``."""
        b, nw, n, c = x.shape
        q, k, v = self.qkv(x).view(b, nw, n, 3, self.heads, c // self.heads).permute(3, 0, 1, 4, 2, 5)
        bias = bias.to(q.dtype)
        # one clip at a time: 4-d inputs with a (nW, heads, N, N) mask reach the fused kernels
        # (3x faster than the unfused product on CPU), which 5-d inputs do not
        out = torch.stack([F.scaled_dot_product_attention(q[i], k[i], v[i], attn_mask=bias) for i in range(b)])
        return self.proj(out.transpose(2, 3).reshape(b, nw, n, c))


class SwinTransformerBlock3D(nn.Module):
    def __init__(self, dim: int, heads: int, shift: Triple, frag_bias: bool) -> None:
        super().__init__()
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention3D(dim, heads, frag_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x: torch.Tensor, window: Triple) -> torch.Tensor:
        size: Triple = tuple(x.shape[1:4])  # type: ignore[assignment]
        win, shift = effective_window(size, window, self.shift)
        if any(s % w for s, w in zip(size, win)):
            raise ValueError(f"token grid {size} is not a multiple of the window {win}")
        h = self.norm1(x)
        if any(shift):
            h = torch.roll(h, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
        device = str(x.device)
        gate = fragment_gate(size, win, shift, device)
        mask = shift_mask(size, win, shift, device) if any(shift) else None
        h = self.attn(window_partition(h, win), self.attn.bias(win, gate, mask))
        h = window_reverse(h, win, size)
        if any(shift):
            h = torch.roll(h, shifts=shift, dims=(1, 2, 3))
        x = x + h
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2x2 spatial neighbours concatenated and projected to twice the channels."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


class BasicLayer(nn.Module):
    """One stage: blocks alternating plain and shifted (half-window) windows, then patch merging."""

    def __init__(self, dim: int, depth: int, heads: int, frag_bias: bool, downsample: bool) -> None:
        super().__init__()
        half: Triple = tuple(w // 2 for w in WINDOW)  # type: ignore[assignment]
        self.blocks = nn.ModuleList(
            SwinTransformerBlock3D(dim, heads, (0, 0, 0) if i % 2 == 0 else half, frag_bias) for i in range(depth))
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor, window: Triple) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, window)
        return self.downsample(x) if self.downsample is not None else x


class PatchEmbed3D(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv3d(3, EMBED_DIM, kernel_size=PATCH, stride=PATCH)
        self.norm = nn.LayerNorm(EMBED_DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` → channels-last tokens ``(B, T/2, H/4, W/4, 96)``."""
        if any(s % p for s, p in zip(x.shape[2:], PATCH)):
            raise ValueError(f"input {tuple(x.shape[2:])} is not a multiple of the patch {PATCH}")
        return self.norm(self.proj(x).permute(0, 2, 3, 4, 1))


class SwinTransformer3D(nn.Module):
    """Swin-T (depths 2-2-6-2, 96 channels) with GRPB in stages 1-3: the ``swin_tiny_grpb`` backbone."""

    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed3D()
        self.layers = nn.ModuleList(
            BasicLayer(EMBED_DIM * 2**i, DEPTHS[i], HEADS[i], FRAG_BIAS[i], downsample=i < len(DEPTHS) - 1)
            for i in range(len(DEPTHS)))
        self.num_features = EMBED_DIM * 2 ** (len(DEPTHS) - 1)
        self.norm = nn.LayerNorm(self.num_features)

    def forward(self, x: torch.Tensor, window: Triple = WINDOW) -> torch.Tensor:
        """``(B, 3, T, H, W)`` → last-stage features ``(B, D, H', W', 768)``, channels last."""
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x, window)
        return self.norm(x)


class VQAHead(nn.Module):
    """IP-NLR head: per-token 768 → 64 → 1 (1x1x1 convolutions, GELU), a local quality map."""

    def __init__(self, in_channels: int = 768, hidden: int = 64) -> None:
        super().__init__()
        self.fc_hid = nn.Conv3d(in_channels, hidden, 1)
        self.fc_last = nn.Conv3d(hidden, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Channels-last ``(B, D, H, W, C)`` → quality map ``(B, D, H, W)``."""
        hid = F.gelu(F.linear(x, self.fc_hid.weight.flatten(1), self.fc_hid.bias))
        return F.linear(hid, self.fc_last.weight.flatten(1), self.fc_last.bias)[..., 0]


class FastVQANet(nn.Module):
    """The official evaluator's module layout: ``fragments_backbone`` and one shared ``vqa_head``."""

    def __init__(self) -> None:
        super().__init__()
        self.fragments_backbone = SwinTransformer3D()
        self.vqa_head = VQAHead(self.fragments_backbone.num_features)
        self.apply(_init)
        for module in self.modules():
            if isinstance(module, WindowAttention3D):
                nn.init.trunc_normal_(module.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, window: Triple = WINDOW) -> tuple[torch.Tensor, torch.Tensor]:
        """Fragments ``(B, 3, T, H, W)`` → (pooled ``(B, 768)`` features, ``(B,)`` quality score)."""
        feat = self.fragments_backbone(x, window)
        return feat.float().mean(dim=(1, 2, 3)), self.vqa_head(feat).float().mean(dim=(1, 2, 3))


def _init(module: nn.Module) -> None:
    """The official random initialisation (only used for ``--random-weights`` runs)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
