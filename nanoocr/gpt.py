"""
The GPT decoder: nanochat's "classic" late-2025 design, kept weight-compatible with its
checkpoints (see dev/design.md §4 and tests/fixtures/nanochat_d2, the ground truth):
- rotary embeddings (base 10000) in nanochat's *half-split* convention, applied before QK-norm
- parameter-free RMSNorm after the token embedding, before attention / MLP, and before the head
- QK-norm, ReLU² MLP at 4x width, no biases, untied wte / lm_head
- logits soft-capped at 15·tanh(x/15) in fp32; vocab padded to a multiple of 64
- GQA (n_kv_head < n_head) through SDPA's enable_gqa where torch >= 2.5, else repeat_interleave
Additions for vision: an `inputs_embeds` path (the VLM writes image embeddings into the
<|image|> positions), an `attention_mask` for left-padded batches, `loss_reduction='sum'` so
callers can normalise by a global token count, and `grow_vocab` for the <|image|> token.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

# enable_gqa arrived in torch 2.5; the fallback expands k/v. Tests flip this to check both agree.
_TORCH_VERSION = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
USE_ENABLE_GQA = _TORCH_VERSION >= (2, 5)


@dataclass
class GPTConfig:
    sequence_len: int = 1024
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 6  # number of query heads
    n_kv_head: int = 6  # number of key/value heads (GQA when < n_head)
    n_embd: int = 768


def padded_vocab(vocab_size, multiple=64):
    return ((vocab_size + multiple - 1) // multiple) * multiple


def norm(x):
    # parameter-free RMSNorm, default eps (nanochat)
    return F.rms_norm(x, (x.size(-1),))


def apply_rotary_emb(x, cos, sin):
    # x: (B, T, H, D). nanochat splits the head dim into two halves (not interleaved pairs):
    # an interleaved RoPE is self-consistent but does not match real nanochat weights.
    d = x.shape[3] // 2
    x1, x2 = x[..., :d], x[..., d:]
    y1 = x1 * cos + x2 * sin
    y2 = x1 * (-sin) + x2 * cos
    return torch.cat([y1, y2], 3).to(x.dtype)


def attention(q, k, v, is_causal=False, attn_mask=None):
    """SDPA on (B, H, T, D) tensors with GQA either native or by expanding k/v."""
    if q.size(1) != k.size(1):
        if USE_ENABLE_GQA:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, enable_gqa=True)
        rep = q.size(1) // k.size(1)
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head = config.n_head, config.n_kv_head
        assert config.n_embd % config.n_head == 0, f"n_embd {config.n_embd} not divisible by n_head {config.n_head}"
        assert config.n_head % config.n_kv_head == 0, f"n_head {config.n_head} not divisible by n_kv_head {config.n_kv_head}"
        self.head_dim = config.n_embd // config.n_head
        self.c_q = nn.Linear(config.n_embd, self.n_head * self.head_dim, bias=False)
        self.c_k = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_v = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)

    def forward(self, x, cos_sin, kv_cache, attn_mask):
        B, T, C = x.size()
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)
        cos, sin = cos_sin
        q, k = apply_rotary_emb(q, cos, sin), apply_rotary_emb(k, cos, sin)
        q, k = norm(q), norm(k)  # QK-norm after RoPE (nanochat's order)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if kv_cache is not None:
            k, v = kv_cache.insert_kv(self.layer_idx, k, v)
        # No explicit mask means plain causal attention over a fresh sequence (the fast path),
        # or a single new token that may see every cached key.
        is_causal = attn_mask is None and k.size(2) == T
        y = attention(q, k, v, is_causal=is_causal, attn_mask=attn_mask)
        y = y.transpose(1, 2).contiguous().view(B, T, -1)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())


class Block(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.attn = CausalSelfAttention(config, layer_idx)
        self.mlp = MLP(config)

    def forward(self, x, cos_sin, kv_cache, attn_mask):
        x = x + self.attn(norm(x), cos_sin, kv_cache, attn_mask)
        x = x + self.mlp(norm(x))
        return x


class KVCache:
    """Preallocated per-layer keys/values for incremental decoding. Also remembers which key
    positions are real (not left padding) so later steps keep masking the padding."""

    def __init__(self, batch_size, num_kv_heads, seq_len, head_dim, num_layers, device, dtype=torch.float32):
        shape = (num_layers, batch_size, num_kv_heads, seq_len, head_dim)
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.key_valid = torch.ones(batch_size, seq_len, dtype=torch.bool, device=device)
        self.has_padding = False
        self.pos = 0
        self.max_len = seq_len

    def insert_kv(self, layer_idx, k, v):
        T = k.size(2)
        assert self.pos + T <= self.max_len, f"KV cache full: {self.pos}+{T} > {self.max_len}"
        self.k[layer_idx, :, :, self.pos:self.pos + T] = k
        self.v[layer_idx, :, :, self.pos:self.pos + T] = v
        end = self.pos + T
        if layer_idx == self.k.size(0) - 1:
            self.pos = end  # advance once every layer has written this chunk
        return self.k[layer_idx, :, :, :end], self.v[layer_idx, :, :, :end]

    def reorder(self, index):
        """Row i becomes the old row index[i] (beam search keeps, drops and copies hypotheses)."""
        self.k = self.k.index_select(1, index)
        self.v = self.v.index_select(1, index)
        self.key_valid = self.key_valid.index_select(0, index)


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.padded_vocab_size = padded_vocab(config.vocab_size)
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(self.padded_vocab_size, config.n_embd),
            "h": nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
        })
        self.lm_head = nn.Linear(config.n_embd, self.padded_vocab_size, bias=False)
        # Rotary tables for 10x the training length (cheap), recomputed in init_weights so that
        # meta-device construction works; non-persistent so checkpoints stay nanochat-shaped.
        self.rotary_seq_len = config.sequence_len * 10
        head_dim = config.n_embd // config.n_head
        cos, sin = self._precompute_rotary(self.rotary_seq_len, head_dim)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def _precompute_rotary(self, seq_len, head_dim, base=10000, device=None):
        channel_range = torch.arange(0, head_dim, 2, dtype=torch.float32, device=device)
        inv_freq = 1.0 / (base ** (channel_range / head_dim))
        t = torch.arange(seq_len, dtype=torch.float32, device=device)
        freqs = torch.outer(t, inv_freq)
        # nanochat keeps the tables in bf16 (even for fp32 activations): real checkpoints' logits
        # differ by ~1e-3 with fp32 tables, so we round the same way to reproduce them exactly.
        cos, sin = freqs.cos().bfloat16(), freqs.sin().bfloat16()
        return cos[None, :, None, :], sin[None, :, None, :]  # (1, T, 1, D/2)

    @torch.no_grad()
    def init_weights(self, proj_std=0.0):
        """nanochat's init: fan-in-scaled normal Linear weights, N(0,1) embeddings, lm_head std
        0.001, and the residual output projections (attn/mlp c_proj) at zero — or N(0, proj_std),
        which the CPU recipe uses so gradient reaches the vision path from step 1."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                fan_out, fan_in = module.weight.shape
                std = 1.0 / math.sqrt(fan_in) * min(1.0, math.sqrt(fan_out / fan_in))
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=1.0)
        nn.init.normal_(self.lm_head.weight, mean=0.0, std=0.001)
        for block in self.transformer.h:
            for proj in (block.attn.c_proj, block.mlp.c_proj):
                if proj_std > 0:
                    nn.init.normal_(proj.weight, mean=0.0, std=proj_std)
                else:
                    nn.init.zeros_(proj.weight)
        self.init_rotary()

    def init_rotary(self):
        device = self.transformer.wte.weight.device
        head_dim = self.config.n_embd // self.config.n_head
        self.cos, self.sin = self._precompute_rotary(self.rotary_seq_len, head_dim, device=device)

    @torch.no_grad()
    def grow_vocab(self, new_size):
        """Grow the vocabulary to new_size (e.g. +1 for <|image|>): every old row of wte and
        lm_head stays bit-identical; new wte rows ~ N(0,1) like init, new lm_head rows zero."""
        old_size = self.config.vocab_size
        assert new_size >= old_size, f"grow_vocab cannot shrink {old_size} -> {new_size}"
        new_padded = padded_vocab(new_size)
        if new_padded != self.padded_vocab_size:
            wte, head = self.transformer.wte.weight, self.lm_head.weight
            new_wte = nn.Embedding(new_padded, wte.size(1), device=wte.device, dtype=wte.dtype)
            new_head = nn.Linear(head.size(1), new_padded, bias=False, device=head.device, dtype=head.dtype)
            nn.init.normal_(new_wte.weight, mean=0.0, std=1.0)
            nn.init.zeros_(new_head.weight)
            new_wte.weight[:self.padded_vocab_size] = wte
            new_head.weight[:self.padded_vocab_size] = head
            self.transformer.wte, self.lm_head = new_wte, new_head
            self.padded_vocab_size = new_padded
        else:  # rows already exist as padding; give the embedding rows an init-like value
            nn.init.normal_(self.transformer.wte.weight[old_size:new_size], mean=0.0, std=1.0)
            self.lm_head.weight[old_size:new_size].zero_()
        self.config.vocab_size = new_size

    def get_device(self):
        return self.transformer.wte.weight.device

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def build_attn_mask(self, attention_mask, T, kv_cache):
        """Boolean (B, 1, T, Tk) mask: causal over absolute positions and blind to padded keys.
        Returns None when plain causal attention (or a single unpadded query) suffices."""
        pos = kv_cache.pos if kv_cache is not None else 0
        if kv_cache is not None and attention_mask is not None:
            kv_cache.key_valid[:, pos:pos + T] = attention_mask.bool()
            kv_cache.has_padding = kv_cache.has_padding or not bool(attention_mask.all())
        padded = (attention_mask is not None and not bool(attention_mask.all())) or \
                 (kv_cache is not None and kv_cache.has_padding)
        if not padded and (kv_cache is None or pos == 0 or T == 1):
            return None
        device = self.get_device()
        Tk = pos + T
        q_pos = torch.arange(pos, Tk, device=device)[:, None]
        k_pos = torch.arange(Tk, device=device)[None, :]
        mask = (k_pos <= q_pos)[None, None]  # (1, 1, T, Tk)
        if padded:
            valid = kv_cache.key_valid[:, :Tk] if kv_cache is not None else attention_mask.bool()
            # a padding query would see no key at all (NaN); let it see itself — its output is unused
            mask = mask & (valid[:, None, None, :] | (k_pos == q_pos)[None, None])
        return mask

    def forward(self, idx=None, targets=None, kv_cache=None, inputs_embeds=None, attention_mask=None,
                loss_reduction="mean"):
        """idx (B, T) token ids, or inputs_embeds (B, T, n_embd) already embedded (the VLM path).
        attention_mask (B, T): 1 for real tokens, 0 for left padding. Returns logits (B, T, vocab)
        when targets is None, else the cross-entropy over targets != -1."""
        assert (idx is None) != (inputs_embeds is None), "pass exactly one of idx or inputs_embeds"
        x = self.transformer.wte(idx) if inputs_embeds is None else inputs_embeds
        B, T, _ = x.size()
        T0 = 0 if kv_cache is None else kv_cache.pos
        assert T0 + T <= self.cos.size(1), f"sequence of {T0 + T} exceeds the rotary cache {self.cos.size(1)}"
        cos_sin = self.cos[:, T0:T0 + T], self.sin[:, T0:T0 + T]
        attn_mask = self.build_attn_mask(attention_mask, T, kv_cache)
        x = norm(x)
        for block in self.transformer.h:
            x = block(x, cos_sin, kv_cache, attn_mask)
        x = norm(x)
        softcap = 15
        logits = self.lm_head(x)[..., :self.config.vocab_size].float()
        logits = softcap * torch.tanh(logits / softcap)
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1,
                               reduction=loss_reduction)

    def new_kv_cache(self, batch_size, seq_len, dtype=None):
        c = self.config
        dtype = dtype or self.transformer.wte.weight.dtype
        return KVCache(batch_size, c.n_kv_head, seq_len, c.n_embd // c.n_head, c.n_layer, self.get_device(), dtype)


def build_gpt(config, device="cpu", proj_std=0.0):
    """Construct on the meta device (no memory touched), materialise, then init."""
    with torch.device("meta"):
        model = GPT(config)
    model.to_empty(device=device)
    model.init_weights(proj_std=proj_std)
    return model
