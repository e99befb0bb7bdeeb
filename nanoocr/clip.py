"""
The CLIP vision transformer as DeepSeek-OCR uses it: the "knowledge" half of the DeepEncoder,
dense global attention over the already-compressed SAM grid (16x fewer tokens than SAM sees).

    compressed SAM map [B, C, qh, qw] -> flatten as the patch sequence -> prepend CLS ->
    + position embedding (resampled to qh x qw) -> pre_layrnorm -> pre-LN blocks (quick_gelu)

Differences from a stock CLIP vision tower, all on purpose:
- its conv patch embedding is bypassed: the SAM grid *is* the patch sequence. The conv is still
  a (frozen) parameter so real CLIP / DeepSeek-OCR checkpoints load key for key; a frozen tensor
  also keeps DDP from complaining about parameters that never receive a gradient.
- no post-layernorm and no pooling: the last block's tokens go straight to the projector.
- the position embedding (CLS + g x g) is resampled bicubically with antialias for other grids
  (DeepSeek-OCR's choice; HF's CLIP resamples without antialias), CLS position kept.
q, k, v are one fused Linear (DeepSeek-OCR's qkv_proj) so attention is one matmul + one SDPA.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

CLIP_LN_EPS = 1e-5


def resize_clip_pos(pos, height, width):
    """CLIP position embedding [1 + g*g, C] -> [1 + height*width, C] (CLS row kept as is).
    float32 for the bicubic antialias kernel (see sam.resize_pos_embed); no-op at the native grid."""
    g = int(round((pos.shape[0] - 1) ** 0.5))
    assert g * g == pos.shape[0] - 1, f"CLIP position embedding of {pos.shape[0]} rows is not 1 + a square grid"
    if g == height and g == width:
        return pos
    grid = pos[1:].view(1, g, g, -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
    grid = grid.to(pos.dtype).permute(0, 2, 3, 1).reshape(height * width, -1)
    return torch.cat([pos[:1], grid], dim=0)


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)  # CLIP's activation (OpenAI trained with it)


class Attention(nn.Module):
    def __init__(self, dim, n_head):
        super().__init__()
        assert dim % n_head == 0, f"CLIP width {dim} must be divisible by its heads {n_head}"
        self.n_head = n_head
        self.qkv = nn.Linear(dim, 3 * dim)  # [q; k; v] stacked on dim 0, like DeepSeek-OCR's qkv_proj
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v)  # no mask: every token sees every token
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(quick_gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, n_head, mlp_dim):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=CLIP_LN_EPS)
        self.attn = Attention(dim, n_head)
        self.norm2 = nn.LayerNorm(dim, eps=CLIP_LN_EPS)
        self.mlp = MLP(dim, mlp_dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CLIPEncoder(nn.Module):
    """CLIP vision transformer over a feature map. Reads clip_width/depth/heads/mlp and clip_patch
    from a DeepEncoderConfig; `grid` is the native side of the map it sees at the Base size (16 for
    the full size: 1024 px / 16 / 4), which sizes the position embedding (1 + grid^2 rows)."""

    def __init__(self, config, grid):
        super().__init__()
        c = config
        self.class_embedding = nn.Parameter(torch.empty(c.clip_width))
        self.position_embedding = nn.Parameter(torch.empty(1 + grid * grid, c.clip_width))
        # Only for weight compatibility (never called in forward): frozen, see module docstring.
        # clip_patch=0 leaves it out (small sizes have no checkpoint to be compatible with).
        self.patch_embedding = None
        if c.clip_patch:
            self.patch_embedding = nn.Conv2d(3, c.clip_width, kernel_size=c.clip_patch, stride=c.clip_patch, bias=False)
        self.freeze_patch_embedding()
        self.pre_norm = nn.LayerNorm(c.clip_width, eps=CLIP_LN_EPS)  # CLIP's "pre_layrnorm"
        self.blocks = nn.ModuleList(Block(c.clip_width, c.clip_heads, c.clip_mlp) for _ in range(c.clip_depth))

    def freeze_patch_embedding(self):
        """The unused conv must never train (DDP would flag it as an unused parameter)."""
        if self.patch_embedding is not None:
            self.patch_embedding.requires_grad_(False)

    def forward(self, patch_embeds):
        """patch_embeds [B, C, h, w] (the compressed SAM map) -> hidden states [B, 1 + h*w, C],
        CLS first then the grid row-major; these are the states before any post-layernorm."""
        B, C, h, w = patch_embeds.shape
        x = patch_embeds.flatten(2).transpose(1, 2)  # [B, h*w, C]
        cls = self.class_embedding.to(x.dtype).expand(B, 1, C)
        x = torch.cat([cls, x], dim=1) + resize_clip_pos(self.position_embedding, h, w).to(x.dtype)
        x = self.pre_norm(x)
        for block in self.blocks:
            x = block(x)
        return x
