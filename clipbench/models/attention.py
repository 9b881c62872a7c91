"""Additive attention biases inside a CLIP image tower (FALIP's foveal attention and its reuses).

A bias is added to the scaled logits ``QK^T / sqrt(d)`` of the chosen blocks before the softmax, exactly as
a float ``attn_mask`` does, cast to the residual stream's dtype. Nothing is patched: the bias reaches the
tower's own blocks as ``attn_mask``; open_clip's own ViT also has a hand-written exact fast path.

Towers (``attention_tower``): open_clip's ``VisionTransformer`` (OpenAI CLIP, DFN, MetaCLIP, CoCa's
attentional pooler), timm ViTs inside open_clip (``vision_cfg.timm_model_name``: SigLIP/SigLIP2/SO400M
with the MAP head, register tokens, EVA02 with rotary embeddings) and Hugging Face ``CLIPVisionModel``
(``model.source=hf``). Conv towers (ResNet, ConvNeXt, FastViT) are refused with one line.
Patch grid, prefix tokens (CLS, registers, none) and input size come from the tower.

Public API::

    tower = attention_tower(loaded.model)                        # depth, num_heads, prefix, has_cls, probe_heads
    layers = resolve_layers([-4, -3, -2, -1], tower.depth)       # -> (8, 9, 10, 11) on a 12-block ViT
    scale = head_scale_matrix("all" | [0, 3] | [[0], [1, 2], ...] | {"scale": [[...]]}, layers, num_heads)
    bias = bias_from_patch_weights(patch_weights, rows="cls", prefix=tower.prefix)   # (B, g, g) -> (B, L, L)
    feats = encode_with_attention_bias(loaded, images, bias, layers, head_scale=scale)   # (B, D), L2-normalised

* ``images``: (B, 3, S, S) tensors already preprocessed for the model (any input, e.g. depth maps).
* ``bias``: (R, L, L), shared by all heads, or per head (R, H, L, L); ``owner`` (R,) maps each bias to its
  image when several biases share one image (R regions over B images); without it R == B.
* ``probe_bias`` (R, 1, Lk) (``probe_bias_from_patch_weights``): the bias on the attention-pool probe's
  query over its keys, for towers without a CLS token (SigLIP's MAP head); ``probe_scale`` (1, Hp).
* ``head_scale``: (len(layers), H) multipliers of the bias per (masked layer, head); None = 1 everywhere.
* ``fast=True`` (default) runs the blocks before the first masked layer once per image and the rest on all
  of an image's biases as one batch. Where ``Tower.qkv``/``finish`` reproduce the blocks: with a bias on the CLS
  query only (``rows="cls"``) the first masked block's other rows, and their q/k/v in the next block, are
  computed once per image; a CLS-pooled tower's last block computes the CLS query only.
  ``fast=False`` is a full forward per bias through the tower's own blocks. Both give the same features.
* ``cls_attention(loaded, images)`` returns the pooling query's per-head attention (head analysis).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clipbench.errors import ConfigError
from clipbench.models.finite import require_finite
from clipbench.models.head_specs import (  # noqa: F401  (torch-free, for config checks; re-exported)
    ROWS,
    _block_scales,
    _heads_rows,
    _number,
    check_heads_spec,
    head_scale_rows,
    resolve_layers,
)


class Tower:
    """What the bias machinery needs of a ViT image tower: token layout, blocks, pooling and projection.

    Tokens: ``prefix`` tokens (CLS first when ``has_cls``, then register tokens) and the g*g patches, row-major.
    ``probe_heads``: heads of an attention-pool probe (SigLIP's MAP head) whose attention over ``probe_skip:``
    tokens a bias can steer; None where the pooled feature is the CLS token's (or an average).
    """

    kind = "vit"
    has_cls = True
    prefix = 1
    probe_heads: int | None = None
    probe_skip = 0

    def __init__(self, visual: nn.Module, blocks: Sequence[nn.Module], num_heads: int, tokens: int):
        self.visual, self.blocks, self.num_heads, self.tokens = visual, blocks, num_heads, tokens
        self.depth = len(blocks)

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError

    def block(self, i: int, x: torch.Tensor, ctx: Any, mask: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def pool(self, x: torch.Tensor, probe_mask: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def qkv(self, i: int, x: torch.Tensor, ctx: Any, start: int = 0, want: str = "qkv") -> tuple[torch.Tensor, ...]:
        """(N, H, r, hd) queries, keys and values of block ``i`` (after q/k norms and rotary embeddings) for the
        residual rows ``x`` (N, r, D), tokens ``start`` to ``start + r``; ``want`` picks a run of them ("q",
        "kv", ...), in that order, and only those are projected."""
        raise NotImplementedError

    def finish(self, i: int, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Block ``i``'s output for the residual rows ``x`` (N, r, D) given their attention output (N, H, r, hd)."""
        raise NotImplementedError

    def query_key(self, i: int, x: torch.Tensor, ctx: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, H, L, hd) queries (already times the softmax scale) and keys of block ``i``."""
        q, k, _ = self.qkv(i, x, ctx)
        return q * q.shape[-1] ** -0.5, k

    def rows_supported(self) -> bool:
        """``qkv``/``finish`` reproduce every block (the fast path may then compute chosen query rows only)."""
        return False

    def cls_pooled(self) -> bool:
        """The pooled feature depends on the last block's CLS output alone."""
        return False


class OpenClipViT(Tower):
    """open_clip's ``VisionTransformer`` (CLIP, DFN, MetaCLIP, CoCa with its attentional pooler)."""

    kind = "open_clip"

    def __init__(self, visual):
        blocks = visual.transformer.resblocks
        super().__init__(visual, blocks, int(blocks[0].attn.num_heads), visual.positional_embedding.shape[0])
        self.batch_first = visual.transformer.batch_first

    def embed(self, images):
        return self.visual._embeds(images), None

    def block(self, i, x, ctx, mask=None):
        if mask is not None:
            mask = mask.reshape(-1, *mask.shape[-2:])  # (N*H, L, L), batch-major as nn.MultiheadAttention wants
        return _call_block(self.blocks[i], x, self.batch_first, mask)

    def pool(self, x, probe_mask=None):
        pooled, _ = self.visual._pool(x)
        return pooled @ self.visual.proj if self.visual.proj is not None else pooled

    def rows_supported(self):
        return all(
            isinstance(getattr(b, "attn", None), nn.MultiheadAttention) and b.attn._qkv_same_embed_dim
            and not hasattr(b, "ln_1_kv") for b in self.blocks
        )

    def cls_pooled(self):
        return getattr(self.visual, "attn_pool", None) is None and getattr(self.visual, "pool_type", "tok") == "tok"

    def qkv(self, i, x, ctx, start=0, want="qkv"):
        block = self.blocks[i]
        attn = block.attn
        if not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim or hasattr(block, "ln_1_kv"):
            raise ConfigError("model.arch", "per-head attention maps need nn.MultiheadAttention blocks")
        return _fused_projection(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias, want, attn.num_heads)

    def finish(self, i, x, out):
        block = self.blocks[i]
        y = x + block.ls_1(block.attn.out_proj(out.transpose(1, 2).reshape(out.shape[0], -1, x.shape[-1])))
        return y + block.ls_2(block.mlp(block.ln_2(y)))


class TimmViT(Tower):
    """A timm ViT inside open_clip's ``TimmModel``: VisionTransformer (SigLIP/SigLIP2 MAP head, register
    tokens) or Eva (EVA02, rotary embeddings), through timm's own blocks with ``attn_mask``."""

    kind = "timm"

    def __init__(self, visual):
        trunk = visual.trunk
        self.trunk = trunk
        self.eva = type(trunk).__name__ == "Eva"
        grid = tuple(trunk.patch_embed.grid_size)
        self.prefix = int(trunk.num_prefix_tokens)
        self.has_cls = getattr(trunk, "cls_token", None) is not None
        super().__init__(visual, trunk.blocks, int(trunk.blocks[0].attn.num_heads), self.prefix + grid[0] * grid[1])
        pool = getattr(trunk, "attn_pool", None)
        if pool is not None:
            self.probe_heads = int(pool.num_heads)
            self.probe_skip = 0 if self.eva or getattr(trunk, "pool_include_prefix", False) else self.prefix

    def embed(self, images):
        trunk = self.trunk
        x = trunk.patch_embed(images)
        if self.eva:
            x, rope = trunk._pos_embed(x)
        else:
            x, rope = trunk.patch_drop(trunk._pos_embed(x)), None
        return trunk.norm_pre(x), rope

    def _rope(self, i, ctx):
        return ctx[i] if ctx is not None and getattr(self.trunk, "rope_mixed", False) else ctx

    def block(self, i, x, ctx, mask=None):
        if self.eva:
            return self.blocks[i](x, rope=self._rope(i, ctx), attn_mask=mask)
        return self.blocks[i](x, attn_mask=mask)

    def pool(self, x, probe_mask=None):
        trunk = self.trunk
        x = trunk.norm(x)
        if probe_mask is None:
            x = trunk.forward_head(x)
        else:  # timm's pool() -> fc_norm -> head_drop -> head, with the probe's attention biased
            x = trunk.attn_pool(x[:, self.probe_skip :], attn_mask=probe_mask)
            x = trunk.head(trunk.head_drop(trunk.fc_norm(x)))
        return self.visual.head(x)

    def rows_supported(self):
        from timm.models.eva import EvaAttention, EvaBlock
        from timm.models.vision_transformer import Attention, Block

        kinds = (EvaBlock, EvaAttention) if self.eva else (Block, Attention)
        return all(
            type(b) is kinds[0] and type(b.attn) is kinds[1] and getattr(b.attn, "gate", None) is None for b in self.blocks
        )

    def cls_pooled(self):
        trunk = self.trunk
        return self.has_cls and getattr(trunk, "attn_pool", None) is None and trunk.global_pool == "token"

    def qkv(self, i, x, ctx, start=0, want="qkv"):
        attn = self.blocks[i].attn
        h = self.blocks[i].norm1(x)
        if self.eva and type(attn).__name__ == "EvaAttention":
            if attn.qkv is not None:
                bias = None if attn.q_bias is None else torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
                out = _fused_projection(h, attn.qkv.weight, bias, want, attn.num_heads)
            else:
                out = _separate_projections(h, attn, want, attn.num_heads)
        elif not self.eva and hasattr(attn, "qkv") and hasattr(attn, "q_norm"):
            out = _fused_projection(h, attn.qkv.weight, attn.qkv.bias, want, attn.num_heads)
        else:
            raise ConfigError("model.arch", f"per-head attention maps are not available for {type(attn).__name__} blocks")
        named = dict(zip(want, out, strict=True))
        rope = self._rope(i, ctx) if self.eva else None
        for c, norm in (("q", attn.q_norm), ("k", attn.k_norm)):
            if c in named:
                named[c] = norm(named[c])
                if rope is not None:
                    named[c] = self._rotate(named[c], rope, start, attn).type_as(out[-1])
        return tuple(named[c] for c in want)

    def _rotate(self, t, rope, start, attn):
        """EVA's rotary embedding on the patch rows of ``t`` (tokens ``start`` on), which must be all of them."""
        from timm.layers import apply_rot_embed_cat

        p = max(self.prefix - start, 0)  # rows of t before the first patch
        if t.shape[2] <= p:
            return t
        if start > self.prefix or start + t.shape[2] != self.tokens:
            raise ValueError(f"rotary embeddings need every patch row; got tokens {start} to {start + t.shape[2]}")
        half = getattr(attn, "rotate_half", False)
        return torch.cat([t[:, :, :p], apply_rot_embed_cat(t[:, :, p:], rope, half=half)], dim=2)

    def finish(self, i, x, out):
        block = self.blocks[i]
        a = block.attn.proj(block.attn.norm(out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)))
        if self.eva:
            y = x + (a if block.gamma_1 is None else block.gamma_1 * a)
            m = block.mlp(block.norm2(y))
            return y + (m if block.gamma_2 is None else block.gamma_2 * m)
        y = x + block.ls1(a)
        return y + block.ls2(block.mlp(block.norm2(y)))

    def probe_query_key(self, x):
        """(N, Hp, 1, hd) scaled probe query and (N, Hp, Lk, hd) keys of the MAP head (after the final norm)."""
        pool = self.trunk.attn_pool
        x = self.trunk.norm(x)[:, self.probe_skip :]
        if pool.pos_embed is not None:
            x = x + pool.pos_embed.unsqueeze(0).to(x.dtype)
        n, length, _ = x.shape
        q = pool.q(pool.latent.expand(n, -1, -1)).reshape(n, pool.latent_len, pool.num_heads, -1).transpose(1, 2)
        k = pool.kv(x).reshape(n, length, 2, pool.num_heads, -1).permute(2, 0, 3, 1, 4)[0]
        q, k = pool.q_norm(q), pool.k_norm(k)
        return q * pool.scale, k


class HFCLIPVision(Tower):
    """A Hugging Face ``CLIPVisionTransformer``: its encoder layers with an additive ``attention_mask``."""

    kind = "hf"

    def __init__(self, visual):
        vm = visual.vision_model
        layers = vm.encoder.layers
        super().__init__(visual, layers, int(layers[0].self_attn.num_heads), 1 + visual.grid_size**2)

    def embed(self, images):
        vm = self.visual.vision_model
        return vm.pre_layrnorm(vm.embeddings(images)), None

    def block(self, i, x, ctx, mask=None):
        return self.blocks[i](x, mask)

    def pool(self, x, probe_mask=None):
        return self.visual.visual_projection(self.visual.vision_model.post_layernorm(x[:, 0]))

    def rows_supported(self):
        return True

    def cls_pooled(self):
        return True

    def qkv(self, i, x, ctx, start=0, want="qkv"):
        attn = self.blocks[i].self_attn
        h = self.blocks[i].layer_norm1(x)
        return _separate_projections(h, attn, want, attn.num_heads)

    def finish(self, i, x, out):
        layer = self.blocks[i]
        y = x + layer.self_attn.out_proj(out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1))
        return y + layer.mlp(layer.layer_norm2(y))


def _check_want(want: str) -> str:
    if not want or want not in "qkv":
        raise ValueError(f"want must be a run of 'qkv' (q, k, v, qk, kv or qkv); got {want!r}")
    return want


def _heads(t: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(N, r, H*hd) -> (N, H, r, hd)."""
    return t.reshape(t.shape[0], t.shape[1], num_heads, -1).transpose(1, 2)


def _fused_projection(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, want: str, num_heads: int):
    """The ``want`` parts of a fused (3D, D) q/k/v projection of ``h``, each (N, H, r, hd); only their rows of
    the weight are multiplied."""
    d = weight.shape[0] // 3
    a = "qkv".index(_check_want(want))
    rows = slice(a * d, (a + len(want)) * d)
    out = F.linear(h, weight[rows], None if bias is None else bias[rows])
    return tuple(_heads(t, num_heads) for t in out.chunk(len(want), dim=-1))


def _separate_projections(h: torch.Tensor, attn: nn.Module, want: str, num_heads: int):
    """The ``want`` parts of ``attn.q_proj``/``k_proj``/``v_proj`` of ``h``, each (N, H, r, hd)."""
    return tuple(_heads(getattr(attn, f"{c}_proj")(h), num_heads) for c in _check_want(want))


def attention_tower(model: nn.Module, arch: str = "this model") -> Tower:
    """The bias adapter of ``model``'s image tower (a CLIP or the tower itself); ConfigError for conv towers."""
    visual = getattr(model, "visual", model)
    if isinstance(visual, Tower):
        return visual
    if getattr(getattr(visual, "transformer", None), "resblocks", None) is not None and hasattr(visual, "_embeds"):
        return OpenClipViT(visual)
    trunk = getattr(visual, "trunk", None)
    if trunk is not None and hasattr(trunk, "blocks") and hasattr(trunk, "patch_embed") and hasattr(trunk, "num_prefix_tokens"):
        return TimmViT(visual)
    adapter = getattr(visual, "attention_tower", None)  # e.g. the Hugging Face CLIP wrapper
    if callable(adapter):
        return adapter()
    name = type(getattr(visual, "trunk", visual)).__name__
    raise ConfigError("model.arch", f"FALIP and head analysis need attention blocks; {arch}'s image tower ({name}) has none")


def head_scale_matrix(spec: Any, layers: Sequence[int | str], num_heads: int) -> torch.Tensor:
    """(len(layers), num_heads) float32 multipliers of the bias for ``method.heads``."""
    return torch.tensor(head_scale_rows(spec, layers, num_heads), dtype=torch.float32).reshape(len(layers), num_heads)


def bias_from_patch_weights(patch_weights: torch.Tensor, rows: str = "cls", prefix: int = 1) -> torch.Tensor:
    """(B, g, g) or (g, g) patch weights -> (B, L, L) float32 bias, L = prefix + g*g; token prefix + r*g + c is
    patch (r, c) and token 0 the CLS token.

    ``cls`` (official): row 0 (the CLS query) at the patch columns; ``all``: every query row (CLS, registers,
    patches); ``diagonal``: entry (t, t) of each patch token t. Everything else is 0 (never -inf).
    """
    if rows not in ROWS:
        raise ConfigError("method.rows", f"{rows!r} is not allowed; use one of {list(ROWS)}")
    weights = patch_weights.float()
    if weights.ndim == 2:
        weights = weights[None]
    flat = weights.flatten(1)
    b, n = flat.shape
    bias = torch.zeros(b, n + prefix, n + prefix, dtype=torch.float32, device=weights.device)
    if rows == "cls":
        bias[:, 0, prefix:] = flat
    elif rows == "all":
        bias[:, :, prefix:] = flat[:, None, :]
    else:
        idx = torch.arange(prefix, n + prefix, device=weights.device)
        bias[:, idx, idx] = flat
    return bias


def probe_bias_from_patch_weights(patch_weights: torch.Tensor, tower: Tower) -> torch.Tensor:
    """(B, g, g) patch weights -> (B, 1, Lk) float32 bias of the pooling probe's query over its Lk keys."""
    flat = patch_weights.float().reshape(len(patch_weights), -1)
    offset = tower.prefix - tower.probe_skip
    bias = torch.zeros(len(flat), 1, offset + flat.shape[1], dtype=torch.float32, device=flat.device)
    bias[:, 0, offset:] = flat
    return bias


def _layer_bias(bias: torch.Tensor, scale: torch.Tensor | None, li: int, num_heads: int, dtype) -> torch.Tensor:
    """(R, H, Lq, L) bias of masked layer number ``li`` (per-head scaled), in the residual stream's dtype."""
    per_head = bias if bias.ndim == 4 else bias[:, None].expand(-1, num_heads, -1, -1)
    if scale is not None:
        per_head = per_head * scale[li].to(bias.device)[None, :, None, None]
    return per_head.to(dtype)


def _call_block(block: nn.Module, x: torch.Tensor, batch_first: bool, attn_mask: torch.Tensor | None = None):
    """open_clip's own block on (N, L, D) tokens."""
    if batch_first:
        return block(x, attn_mask=attn_mask)
    return block(x.transpose(0, 1), attn_mask=attn_mask).transpose(0, 1)


def _check_bias(bias: torch.Tensor, rows: int, tokens: int, num_heads: int, what: str = "bias") -> None:
    ok = bias.ndim in (3, 4) and bias.shape[-2:] == (rows, tokens) and (bias.ndim == 3 or bias.shape[1] == num_heads)
    if not ok:
        raise ValueError(f"{what} must be (R, {rows}, {tokens}) or (R, {num_heads}, {rows}, {tokens}); got {tuple(bias.shape)}")


@dataclass
class BiasJob:
    """One config's biases on a batch of images (the arguments of ``encode_with_attention_bias``)."""

    bias: torch.Tensor | None
    layers: Any
    head_scale: torch.Tensor | None = None
    owner: torch.Tensor | None = None
    fast: bool = True
    normalize: bool = True
    probe_bias: torch.Tensor | None = None
    probe_scale: torch.Tensor | None = None


@torch.inference_mode()
def encode_with_attention_bias(
    loaded,
    images: torch.Tensor,
    bias: torch.Tensor | None,
    layers: Any,
    head_scale: torch.Tensor | None = None,
    owner: torch.Tensor | None = None,
    fast: bool = True,
    normalize: bool = True,
    probe_bias: torch.Tensor | None = None,
    probe_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """(R, D) image features with ``bias`` added to the attention logits of ``layers`` and ``probe_bias``
    (R, 1, Lk) to the pooling probe's (see the module doc)."""
    job = BiasJob(bias, layers, head_scale, owner, fast, normalize, probe_bias, probe_scale)
    (out,) = encode_jobs_with_attention_bias(loaded, images, [job])
    if isinstance(out, Exception):
        raise out
    return out


@torch.inference_mode()
def encode_jobs_with_attention_bias(loaded, images: torch.Tensor, jobs: Sequence[BiasJob]) -> list[torch.Tensor | Exception]:
    """Several configs' biases on the same ``images``: the embedding and the unbiased blocks before each job's
    first biased one run once (jobs sharing a longer prefix share it too), then each job runs its own suffix.
    A job's features equal ``encode_with_attention_bias`` alone; a job that fails gets its exception."""
    tower = attention_tower(loaded.model, getattr(loaded, "arch", "this model"))
    images = images.to(loaded.device)
    prepared = [_prepare(loaded, tower, job, len(images)) for job in jobs]
    out: list[torch.Tensor | Exception] = [None] * len(jobs)  # type: ignore[list-item]
    order = sorted(range(len(jobs)), key=lambda j: _prefix_end(tower, prepared[j]))
    with loaded.autocast():
        x, ctx = tower.embed(images)
        done = 0
        unbiased: dict = {}  # the first biased block's per-image parts, shared by the jobs that start there
        for j in order:
            job = prepared[j]
            end = _prefix_end(tower, job)
            for i in range(done, end):  # the shared prefix, held for this image batch only
                x = tower.block(i, x, ctx)
            done = end
            try:
                out[j] = _suffix(loaded, tower, x, ctx, job, unbiased)
            except Exception as exc:  # noqa: BLE001  (this config fails alone)
                out[j] = exc
    return out


def _prepare(loaded, tower: Tower, job: BiasJob, n_images: int) -> BiasJob:
    """A job's inputs checked and moved to the model's device, its layers resolved."""
    bias, probe_bias = job.bias, job.probe_bias
    if bias is None and probe_bias is None:
        raise ValueError("give a block bias, a probe bias, or both")
    layers = resolve_layers(job.layers, tower.depth) if bias is not None else ()
    count = len(bias) if bias is not None else len(probe_bias)
    owner = torch.arange(n_images) if job.owner is None else job.owner.to("cpu", torch.long)
    if len(owner) != count:
        raise ValueError(f"{count} biases for {len(owner)} owners")
    if bias is not None:
        _check_bias(bias, tower.tokens, tower.tokens, tower.num_heads)
        if job.head_scale is not None and tuple(job.head_scale.shape) != (len(layers), tower.num_heads):
            raise ValueError(f"head_scale must be {len(layers)} x {tower.num_heads}, got {tuple(job.head_scale.shape)}")
        bias = bias.to(loaded.device)
    if probe_bias is not None:
        if tower.probe_heads is None:
            raise ConfigError("method.rows", f"{loaded.arch}'s image tower has no attention-pool probe to bias")
        _check_bias(probe_bias, 1, tower.tokens - tower.probe_skip, tower.probe_heads, "probe_bias")
        probe_bias = probe_bias.to(loaded.device)
    return BiasJob(bias, layers, job.head_scale, owner.to(loaded.device), job.fast, job.normalize, probe_bias, job.probe_scale)


def _prefix_end(tower: Tower, job: BiasJob) -> int:
    """How many leading blocks see no bias and run once per image: all before the first biased block with
    ``fast`` (all of them when only the probe is biased), none without."""
    if not job.fast:
        return 0
    return job.layers[0] if job.layers else tower.depth


def _suffix(loaded, tower: Tower, x, ctx, job: BiasJob, unbiased: dict | None = None) -> torch.Tensor:
    """The blocks from ``_prefix_end`` on, the pooling and the projection of one job (``x``: per image;
    ``unbiased``: per-image parts of the first biased block already computed from this ``x`` by another job)."""
    bias, owner, layers, scale = job.bias, job.owner, job.layers, job.head_scale
    if job.fast and bias is not None and job.probe_bias is None and tower.has_cls and tower.rows_supported():
        x = _fast_rows_blocks(tower, x, ctx, bias, owner, layers, scale, unbiased)
    else:
        x = _shared_prefix_blocks(tower, x, ctx, bias, owner, layers, scale, _prefix_end(tower, job))
    probe = None if job.probe_bias is None else _layer_bias(job.probe_bias, job.probe_scale, 0, tower.probe_heads, x.dtype)
    pooled = tower.pool(x, probe)
    pooled = require_finite(pooled.float(), "image features", loaded, sample_overflow=True)
    return F.normalize(pooled, dim=-1) if job.normalize else pooled


def _shared_prefix_blocks(tower: Tower, x, ctx, bias, owner, layers, scale, first: int):
    """From block ``first`` on (``x``: one token set per image), the tower's own blocks on every bias, the bias
    as ``attn_mask`` in ``layers``; before ``first`` nothing is biased (run once per image by the caller)."""
    x = x[owner]
    for i in range(first, tower.depth):
        mask = _layer_bias(bias, scale, layers.index(i), tower.num_heads, x.dtype) if i in layers else None
        x = tower.block(i, x, ctx, mask)
    return x


def _fast_rows_blocks(tower: Tower, x, ctx, bias, owner, layers, scale, unbiased: dict | None = None):
    """The exact fast path from the first masked block (``x``: the shared prefix, per image): all biases as one
    batch, CLS-only last block. ``unbiased`` keeps per-image parts computed from this ``x`` for the next job."""
    first, last = layers[0], tower.depth - 1
    parts = unbiased if unbiased is not None else {}
    row0_only = not bias[..., 1:, :].any()
    if row0_only:
        bias = bias[..., :1, :]

    dtype = x.dtype

    def mask(i):
        return _layer_bias(bias, scale, layers.index(i), tower.num_heads, dtype) if i in layers else None

    def cls_only(i):
        return i == last and tower.cls_pooled()

    start = first
    if row0_only:  # only the CLS query is biased: the other rows of this block stay per image
        x = _cls_row_block(tower, first, x, ctx, mask(first), cls_only(first), owner, parts)
        if first < last:
            x = _block_after_cls_row(tower, first + 1, x, ctx, mask(first + 1), cls_only(first + 1), owner, parts)
            start = first + 2
        else:
            x = x if cls_only(first) else torch.cat([x[0], x[1][owner]], dim=1)
            start = first + 1
    else:
        x = x[owner]
    for i in range(start, tower.depth):
        m = mask(i)
        x = tower.block(i, x, ctx) if m is None and not cls_only(i) else _rows_block(tower, i, x, ctx, m, cls_only(i))
    return x


def _cls_row_block(tower: Tower, i: int, x, ctx, mask, cls_only: bool, owner, parts: dict):
    """Block ``i`` with a bias (R, H, 1, L) on the CLS query only, ``x`` one token set per image (B, L, D): every
    other row is unbiased, so its output (and all keys and values) is computed once per image and kept in
    ``parts`` for other jobs on the same ``x``; only the CLS query's attention runs per region.
    Returns the regions' CLS rows (R, 1, D) and, unless ``cls_only``, the per-image rest (B, L-1, D)."""
    if ("qkv", i) not in parts:
        parts["qkv", i] = tower.qkv(i, x, ctx)
    q, k, v = parts["qkv", i]
    cls = tower.finish(i, x[owner, :1], F.scaled_dot_product_attention(q[owner, :, :1], k[owner], v[owner], attn_mask=mask))
    if cls_only:
        return cls
    if ("rest", i) not in parts:
        parts["rest", i] = tower.finish(i, x[:, 1:], F.scaled_dot_product_attention(q[:, :, 1:], k, v))
    return cls, parts["rest", i]


def _block_after_cls_row(tower: Tower, i: int, x, ctx, mask, cls_only: bool, owner, parts: dict):
    """The block after ``_cls_row_block``: ``x`` = (CLS rows per region, the other rows per image). The other
    rows' queries, keys and values are projected once per image (kept in ``parts``), the CLS row's per region;
    from here on every row of a region depends on its CLS row. Returns (R, L, D), or (R, 1, D) when ``cls_only``."""
    cls, rest = x
    want = "kv" if cls_only else "qkv"
    if ("rest", want, i) not in parts:
        parts["rest", want, i] = tower.qkv(i, rest, ctx, start=1, want=want)
    rest_qkv = [t[owner] for t in parts["rest", want, i]]
    q, k, v = tower.qkv(i, cls, ctx)
    k, v = torch.cat([k, rest_qkv[-2]], dim=2), torch.cat([v, rest_qkv[-1]], dim=2)
    head_out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if cls_only:
        return tower.finish(i, cls, head_out)
    rest_out = F.scaled_dot_product_attention(rest_qkv[0], k, v)
    return tower.finish(i, torch.cat([cls, rest[owner]], dim=1), torch.cat([head_out, rest_out], dim=2))


def _rows_block(tower: Tower, i: int, x, ctx, mask, cls_only: bool):
    """Block ``i`` with an additive (R, H, Lq, L) bias on the first Lq query rows (or none). Returns (R, L, D),
    or (R, 1, D) when ``cls_only`` (then only the CLS query is projected)."""
    if cls_only:
        (q,) = tower.qkv(i, x[:, :1], ctx, want="q")
        k, v = tower.qkv(i, x, ctx, want="kv")
        row = None if mask is None else mask[..., :1, :]
        return tower.finish(i, x[:, :1], F.scaled_dot_product_attention(q, k, v, attn_mask=row))
    q, k, v = tower.qkv(i, x, ctx)
    if mask is None or mask.shape[-2] == x.shape[1]:
        return tower.finish(i, x, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    rows = mask.shape[-2]
    head_out = F.scaled_dot_product_attention(q[:, :, :rows], k, v, attn_mask=mask)
    rest = F.scaled_dot_product_attention(q[:, :, rows:], k, v)
    return tower.finish(i, x, torch.cat([head_out, rest], dim=2))


@torch.inference_mode()
def cls_attention(loaded, images: torch.Tensor) -> torch.Tensor:
    """Per-head softmax attention of the pooling query, no bias: (B, depth, H, L) of the CLS query in every
    block, or (B, 1, Hp, Lk) of the attention-pool probe on towers without a CLS token (SigLIP)."""
    tower = attention_tower(loaded.model, getattr(loaded, "arch", "this model"))
    if not tower.has_cls and tower.probe_heads is None:
        raise ConfigError("model.arch", f"{loaded.arch}'s image tower has neither a CLS token nor a pooling probe")
    maps = []
    with loaded.autocast():
        x, ctx = tower.embed(images.to(loaded.device))
        for i in range(tower.depth):
            if tower.has_cls:
                q, k = tower.query_key(i, x, ctx)
                maps.append((q[:, :, :1] @ k.transpose(-2, -1)).float().softmax(-1)[:, :, 0])
            x = tower.block(i, x, ctx)
        if not tower.has_cls:
            q, k = tower.probe_query_key(x)
            maps.append((q[:, :, :1] @ k.transpose(-2, -1)).float().softmax(-1)[:, :, 0])
    return torch.stack(maps, dim=1)


def patch_attention(loaded, images: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    """``cls_attention`` restricted to the g*g patch keys, and a label per row (block index or ``probe``)."""
    tower = attention_tower(loaded.model, getattr(loaded, "arch", "this model"))
    maps = cls_attention(loaded, images)
    if tower.has_cls:
        return maps[..., tower.prefix :], [str(i) for i in range(tower.depth)]
    return maps[..., tower.prefix - tower.probe_skip :], ["probe"]
