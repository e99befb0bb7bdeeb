"""
The SAM image encoder (ViT-Det style) as DeepSeek-OCR uses it: the "perception" half of the
DeepEncoder, run at high resolution where window attention keeps the cost near-linear in pixels.

    pixels -> patch conv -> + absolute pos-embed -> blocks (window attention, with a few global
    blocks) -> neck (1x1 conv, LN2d, 3x3 conv, LN2d) -> stride-2 convs (net_2, net_3) -> grid

Every size is a config field (see deepencoder.DeepEncoderConfig): the full size is SAM ViT-B
(768 wide, 12 deep, window 14, global blocks 2/5/8/11, 1024 px) with two stride-2 convs
256->512->1024, the CPU size is a few blocks 128 wide with one conv. Any input H x W (multiples
of the patch size) works: the absolute pos-embed is resampled bicubically (with antialias) and
the global blocks' relative-position tables linearly, exactly as SAM/DeepSeek-OCR do, so a
checkpoint trained at 1024 px runs at 512, 1280 or a 32 x 640 text strip.

Attention is F.scaled_dot_product_attention with SAM's decomposed relative-position bias passed
as an additive mask: one fused kernel over every (image, window, head) at once, no Python loops.
Parameter names follow DeepSeek-OCR's sam_model (blocks.i.norm1, attn.qkv, mlp.lin1, ...);
encoder_weights.py maps the other public layouts onto them.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

SAM_LN_EPS = 1e-6  # SAM's LayerNorm eps (blocks and neck)


def resize_pos_embed(pos, height, width):
    """Absolute pos-embed [1, g, g, C] -> [1, height, width, C].
    Bicubic with antialias (SAM/DeepSeek-OCR's choice), computed in float32 because the bicubic
    antialias kernels do not exist for half types on every backend; a no-op at the native grid."""
    if pos.shape[1] == height and pos.shape[2] == width:
        return pos
    x = pos.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
    return x.to(pos.dtype).permute(0, 2, 3, 1)


def rel_pos_table(size, rel_pos):
    """Relative-position embeddings for `size` queries against `size` keys along one axis:
    [size, size, head_dim], entry [i, j] = table[i - j + size - 1].
    The stored table covers offsets of a (2g-1)-long axis; for another grid it is resampled
    linearly first (what SAM does when the global blocks see a grid other than the pretraining one).
    Queries and keys always share the grid here (self-attention), so no coordinate rescaling."""
    length = 2 * size - 1
    if rel_pos.shape[0] != length:
        rel_pos = F.interpolate(rel_pos.t()[None], size=length, mode="linear")[0].t()
    idx = torch.arange(size, device=rel_pos.device)
    return rel_pos[idx[:, None] - idx[None, :] + (size - 1)]


class Attention(nn.Module):
    """Multi-head self-attention over a [B, H, W, C] grid with decomposed relative-position bias
    (MViTv2): bias[(h,w), (kh,kw)] = q(h,w)·Rh[h-kh] + q(h,w)·Rw[w-kw], with the unscaled query."""

    def __init__(self, dim, n_head, rel_size):
        super().__init__()
        assert dim % n_head == 0, f"SAM width {dim} must be divisible by its heads {n_head}"
        self.n_head = n_head
        self.head_dim = dim // n_head
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)
        # rel_size: the grid side the tables are trained for (the window, or the whole native grid
        # in a global block); other sides are interpolated on the fly.
        self.rel_pos_h = nn.Parameter(torch.empty(2 * rel_size - 1, self.head_dim))
        self.rel_pos_w = nn.Parameter(torch.empty(2 * rel_size - 1, self.head_dim))

    def forward(self, x):
        B, H, W, C = x.shape
        qkv = self.qkv(x).view(B, H * W, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [B, nh, H*W, hd]
        Rh = rel_pos_table(H, self.rel_pos_h)  # [H, H, hd]
        Rw = rel_pos_table(W, self.rel_pos_w)  # [W, W, hd]
        qg = q.view(B, self.n_head, H, W, self.head_dim)
        rel_h = torch.einsum("bnhwc,hkc->bnhwk", qg, Rh)
        rel_w = torch.einsum("bnhwc,wkc->bnhwk", qg, Rw)
        # [B, nh, H, W, kH, kW] flattened to [B, nh, H*W, kH*kW]: key index = kh*W + kw (row-major)
        bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(B, self.n_head, H * W, H * W)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        y = y.transpose(1, 2).reshape(B, H, W, C)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.lin2(F.gelu(self.lin1(x)))  # exact (erf) GELU, as SAM


def window_partition(x, ws):
    """[B, H, W, C] -> [B * nWin, ws, ws, C], zero-padding H and W up to multiples of ws.
    The padding happens after norm1, so padded positions are zero vectors that still act as keys
    (SAM does not mask them) -- kept as is, because the pretrained weights expect it."""
    B, H, W, C = x.shape
    ph, pw = (-H) % ws, (-W) % ws
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    Hp, Wp = H + ph, W + pw
    x = x.view(B, Hp // ws, ws, Wp // ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws, ws, C), (Hp, Wp)


def window_unpartition(x, ws, padded, size):
    """Inverse of window_partition: [B * nWin, ws, ws, C] -> [B, H, W, C] with the padding cut."""
    (Hp, Wp), (H, W) = padded, size
    B = x.shape[0] // ((Hp // ws) * (Wp // ws))
    x = x.view(B, Hp // ws, Wp // ws, ws, ws, -1).permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, -1)
    return x[:, :H, :W, :]


class Block(nn.Module):
    """Pre-LN transformer block; window_size 0 means global attention over the whole grid."""

    def __init__(self, dim, n_head, mlp_dim, window_size, rel_size):
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=SAM_LN_EPS)
        self.attn = Attention(dim, n_head, rel_size)
        self.norm2 = nn.LayerNorm(dim, eps=SAM_LN_EPS)
        self.mlp = MLP(dim, mlp_dim)

    def forward(self, x):
        h = self.norm1(x)
        if self.window_size > 0:
            H, W = h.shape[1], h.shape[2]
            h, padded = window_partition(h, self.window_size)
            h = window_unpartition(self.attn(h), self.window_size, padded, (H, W))
        else:
            h = self.attn(h)
        x = x + h
        return x + self.mlp(self.norm2(x))


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a [B, C, H, W] map (SAM's neck)."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Neck(nn.Module):
    def __init__(self, dim, out):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, out, kernel_size=1, bias=False)
        self.norm1 = LayerNorm2d(out, eps=SAM_LN_EPS)
        self.conv2 = nn.Conv2d(out, out, kernel_size=3, padding=1, bias=False)
        self.norm2 = LayerNorm2d(out, eps=SAM_LN_EPS)

    def forward(self, x):  # [B, H, W, C] tokens -> [B, out, H, W] map
        x = self.norm1(self.conv1(x.permute(0, 3, 1, 2)))
        return self.norm2(self.conv2(x))


class SAMEncoder(nn.Module):
    """SAM ViT + neck + the stride-2 compressor convs. Reads from a DeepEncoderConfig:
    image_size, patch_size, sam_width/depth/heads/mlp, window_size, global_attn_indexes,
    neck_channels, conv_channels."""

    def __init__(self, config):
        super().__init__()
        c = config
        assert c.image_size % c.patch_size == 0, f"image_size {c.image_size} must be a multiple of patch_size {c.patch_size}"
        grid = c.image_size // c.patch_size  # native grid: the pos-embed and global rel-pos size
        for i in c.global_attn_indexes:
            assert 0 <= i < c.sam_depth, f"global_attn_indexes {c.global_attn_indexes} outside depth {c.sam_depth}"
        self.patch_size = c.patch_size
        self.patch_embed = nn.Conv2d(3, c.sam_width, kernel_size=c.patch_size, stride=c.patch_size)
        self.pos_embed = nn.Parameter(torch.empty(1, grid, grid, c.sam_width))
        self.blocks = nn.ModuleList()
        for i in range(c.sam_depth):
            is_global = i in c.global_attn_indexes
            self.blocks.append(Block(c.sam_width, c.sam_heads, c.sam_mlp,
                                     window_size=0 if is_global else c.window_size,
                                     rel_size=grid if is_global else c.window_size))
        self.neck = Neck(c.sam_width, c.neck_channels)
        # The token compressor (DeepSeek-OCR's net_2, net_3): each 3x3 stride-2 conv halves both
        # sides (ceil), with no bias and no nonlinearity in between, exactly as released.
        chans = (c.neck_channels,) + tuple(c.conv_channels)
        self.downsample = nn.ModuleList(
            nn.Conv2d(chans[i], chans[i + 1], kernel_size=3, stride=2, padding=1, bias=False)
            for i in range(len(chans) - 1))

    def forward(self, pixels):
        """pixels [B, 3, H, W] -> (neck map [B, neck, H/p, W/p], compressed map [B, C, qh, qw])."""
        B, _, H, W = pixels.shape
        assert H % self.patch_size == 0 and W % self.patch_size == 0, \
            f"image {H}x{W} is not a multiple of the SAM patch size {self.patch_size}"
        x = self.patch_embed(pixels).permute(0, 2, 3, 1)  # [B, h, w, C] channels-last for the blocks
        x = x + resize_pos_embed(self.pos_embed, x.shape[1], x.shape[2])
        for block in self.blocks:
            x = block(x)
        neck = self.neck(x)
        y = neck
        for conv in self.downsample:
            y = conv(y)
        return neck, y
