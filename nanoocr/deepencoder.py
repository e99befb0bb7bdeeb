"""
DeepEncoder: DeepSeek-OCR's vision encoder, at any size.

    pixels [B,3,H,W] -> SAM (window attention, patch p) -> neck -> n stride-2 convs -> grid [qh, qw]
                     -> CLIP over that grid (CLS dropped on output)
    tokens = Linear(concat[CLIP tokens, SAM grid tokens]) -> [B, qh*qw, out_dim]   (row-major)

and the per-image embedding sequence the GPT reads (dev/design.md §2):

    [ Gundam tile mosaic rows, each + image_newline ]  (only with tiles)
    [ global view rows, each + image_newline ]
    [ view_separator ]

num_image_tokens() is the pure placeholder count for a (config, mode, image size), so the data
pipeline can lay out <|image|> placeholders without running the encoder; the tests check that it
equals what embed_image returns.

Construction follows nanochat: build on the meta device, to_empty(), init_weights(); built on a
real device the constructor initialises itself. Real weights come from encoder_weights.py.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn

from nanoocr.clip import CLIPEncoder
from nanoocr.modes import GUNDAM_TILE_MODE, MODES, gundam_grid, mode_side
from nanoocr.sam import SAMEncoder


@dataclass
class DeepEncoderConfig:
    # SAM ViT (perception): runs on the full-resolution patch grid
    image_size: int = 1024              # the Base-mode side; pos-embed grid = image_size // patch_size
    patch_size: int = 16
    sam_width: int = 768
    sam_depth: int = 12
    sam_heads: int = 12
    sam_mlp: int = 3072
    window_size: int = 14
    global_attn_indexes: tuple = (2, 5, 8, 11)
    neck_channels: int = 256
    # token compressor: one 3x3 stride-2 conv per entry (output channels); DeepSeek-OCR: net_2, net_3
    conv_channels: tuple = (512, 1024)
    # CLIP ViT (knowledge): runs on the compressed grid, so its width = the last conv's channels
    clip_width: int = 1024
    clip_depth: int = 24
    clip_heads: int = 16
    clip_mlp: int = 4096
    clip_patch: int = 14                # shape of CLIP's unused frozen patch conv (0 = leave it out)
    # projector output = the GPT width
    out_dim: int = 1280

    def __post_init__(self):
        # JSON round trips (checkpoint metadata) turn tuples into lists; keep them hashable tuples
        self.global_attn_indexes = tuple(self.global_attn_indexes)
        self.conv_channels = tuple(self.conv_channels)
        sam_out = self.conv_channels[-1] if self.conv_channels else self.neck_channels
        assert self.clip_width == sam_out, (
            f"clip_width {self.clip_width} must equal the channels CLIP is fed ({sam_out}: the last of "
            f"conv_channels {self.conv_channels}, or neck_channels with no convs)")

    @property
    def num_convs(self):
        return len(self.conv_channels)

    @property
    def stride(self):
        """Pixels per vision token along a side: sizes must be multiples of this for an exact grid."""
        return self.patch_size * 2 ** self.num_convs


# Encoder sizes (kwargs for DeepEncoderConfig; a training preset picks one with encoder_size). Named for
# what they are, not for the resolution modes (tiny/small/base/large/gundam), which exist at every size.
ENCODER_SIZES = {
    # DeepSeek-OCR: SAM ViT-B (1024 px, patch 16) + 256->512->1024 convs + CLIP-L/14 (+ projector)
    "full": dict(),
    # A CPU-trainable size after the probe in dev/design.md §9: patch 8 (a 32-px text strip is
    # 4 patches tall), three 128-wide SAM blocks (two windowed, one global), neck 64, ONE stride-2
    # conv 64->128 (2 x 16 = 32 tokens for a 32 x 256 strip), two 128-wide CLIP blocks, no CLIP
    # patch conv. Base side 256 keeps the mode token counts of the full size (73/111/273/421).
    # The GPU speedrun's (presets/gpu.toml): DeepSeek-OCR's structure and geometry unchanged -- 1024-px Base
    # side, patch 16, 14x14 windows with two global blocks, TWO stride-2 convs (16x fewer tokens: 256
    # for a Base page, 64 / 100 in Tiny / Small), CLIP fed the conv grid -- at about a tenth of the
    # width and half the depth (SAM 384 x 6, CLIP 512 x 6: ~34M parameters against ~400M), so one
    # H100/H200 trains it on whole pages from scratch in about an hour. A character of a 1024-px page
    # (16-42 px fonts) is still about one 16-px patch tall, as at full size.
    "gpu": dict(image_size=1024, patch_size=16, sam_width=384, sam_depth=6, sam_heads=6, sam_mlp=1536,
                window_size=14, global_attn_indexes=(2, 5), neck_channels=128, conv_channels=(256, 512),
                clip_width=512, clip_depth=6, clip_heads=8, clip_mlp=2048, clip_patch=0, out_dim=512),
    "cpu": dict(image_size=256, patch_size=8, sam_width=128, sam_depth=3, sam_heads=4, sam_mlp=512,
                window_size=4, global_attn_indexes=(2,), neck_channels=64, conv_channels=(128,),
                clip_width=128, clip_depth=2, clip_heads=4, clip_mlp=512, clip_patch=0, out_dim=192),
    # The CPU page recipe's (presets/pages_cpu.toml): the cpu size with DeepSeek-OCR's TWO stride-2 convs
    # (net_2, net_3: 16x fewer tokens than SAM's patches), so a vision token covers 32 x 32 pixels and
    # the named modes give DeepSeek-OCR's grids at a quarter of its side: Tiny 4x4 = 16, Small 5x5 = 25,
    # Base 8x8 = 64, Large 10x10 = 100 vision tokens for a 256-px page of 10-12 px text. All three SAM
    # blocks windowed: a global block over a page's 1024-1600 patches cost 2.7x the rest of the encoder
    # (its relative-position bias makes every attention matrix explicit; dev/LOG.md "Page recipe"),
    # and CLIP's global attention over the compressed grid already mixes the whole page.
    "cpu_page": dict(image_size=256, patch_size=8, sam_width=128, sam_depth=3, sam_heads=4, sam_mlp=512,
                     window_size=4, global_attn_indexes=(), neck_channels=64, conv_channels=(128, 128),
                     clip_width=128, clip_depth=2, clip_heads=4, clip_mlp=512, clip_patch=0, out_dim=192),
}


def grid_size(config, height, width):
    """(qh, qw): the vision-token grid for an H x W input. The patch conv floors, each stride-2
    conv (k3, p1) takes ceil(n/2); for sides that are multiples of the patch size this is
    q = ceil(side / patch / 2**num_convs)."""
    qh, qw = height // config.patch_size, width // config.patch_size
    for _ in range(config.num_convs):
        qh, qw = (qh + 1) // 2, (qw + 1) // 2
    return qh, qw


def view_tokens(config, height, width):
    """Embeddings of one view: qh rows of qw tokens, each row followed by a newline."""
    qh, qw = grid_size(config, height, width)
    return qh * (qw + 1)


def num_image_tokens(config, mode, width=None, height=None, grid=None):
    """Number of <|image|> placeholders (vision tokens + newlines + the separator) for one image.
    mode: tiny | small | base | large (width/height unused); gundam, which needs the image's
    width and height to pick the tile grid (or an explicit grid=(wc, hc); grid=None with both
    sides fitting one tile means no tiles); or a fixed (H, W) input size as image_process takes it
    (one view, no tiles). Mode sides scale with config.image_size (modes.mode_side)."""
    if isinstance(mode, (tuple, list)):  # a fixed (H, W) input, e.g. one-line strips: one view, no tiles
        return view_tokens(config, int(mode[0]), int(mode[1])) + 1
    assert mode in MODES, f"unknown mode {mode!r}; choose one of {sorted(MODES)} or an (H, W) tuple"
    side = mode_side(mode, config.image_size, config.stride)
    n = view_tokens(config, side, side) + 1  # the global view + view_separator
    if mode == "gundam":
        tile = mode_side(GUNDAM_TILE_MODE, config.image_size, config.stride)
        if grid is None:
            assert width is not None and height is not None, "gundam needs the image's width and height"
            grid = gundam_grid(width, height, tile=tile)
        if grid is not None:
            wc, hc = grid
            qt, _ = grid_size(config, tile, tile)
            n += (qt * hc) * (qt * wc + 1)  # the mosaic: qt*hc rows of qt*wc tokens + a newline each
    return n


def count_vision_tokens(config, processed):
    """Vision tokens of one processed image (a process_image dict) as DeepSeek-OCR counts them for
    its compression ratio (dev/design.md §2, §6): grid tokens only (no newlines / separator); of a
    padded square view only the "valid" part, int(N * valid_ratio) as its released code does; all
    tile tokens. num_image_tokens above is the placeholder count, layout tokens included."""
    gv = processed["global_view"]
    qh, qw = grid_size(config, gv.shape[-2], gv.shape[-1])
    n = int(qh * qw * processed.get("valid_ratio", 1.0))
    tiles = processed.get("tiles")
    if tiles is not None:
        th, tw = grid_size(config, tiles.shape[-2], tiles.shape[-1])
        n += tiles.shape[0] * th * tw
    return max(n, 1)


class DeepEncoder(nn.Module):
    """SAM -> compressor -> CLIP -> projector, plus the learned image_newline / view_separator.
    State-dict names: sam.* (DeepSeek-OCR's sam_model names, net_2/net_3 = sam.downsample.0/1),
    clip.* (fused qkv), projector.*, image_newline, view_separator."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        q, _ = grid_size(config, config.image_size, config.image_size)
        self.sam = SAMEncoder(config)
        self.clip = CLIPEncoder(config, grid=q)
        # concat order is [CLIP, SAM] as in DeepSeek-OCR (its projector weights depend on it)
        self.projector = nn.Linear(2 * config.clip_width, config.out_dim)
        self.image_newline = nn.Parameter(torch.empty(config.out_dim))
        self.view_separator = nn.Parameter(torch.empty(config.out_dim))
        if self.image_newline.device.type != "meta":
            self.init_weights()  # never hand out torch.empty garbage; on meta the caller inits

    @torch.no_grad()
    def init_weights(self):
        """Fresh weights (also after to_empty() from the meta device). Linear/conv weights get
        N(0, 1/fan_in): variance-preserving, so the SAM/conv/CLIP stack keeps unit-scale activations
        and the projected tokens start at roughly the scale of the GPT's N(0,1) token embeddings.
        Pos-embeds small, relative-position tables zero (SAM's own init: attention starts purely
        content-based), LayerNorms identity, newline/separator N(0, 1/out_dim) as DeepSeek-OCR."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.normal_(m.weight, std=m.weight[0].numel() ** -0.5)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.sam.pos_embed, std=0.02)
        for block in self.sam.blocks:
            nn.init.zeros_(block.attn.rel_pos_h)
            nn.init.zeros_(block.attn.rel_pos_w)
        nn.init.normal_(self.clip.class_embedding, std=self.config.clip_width ** -0.5)
        nn.init.normal_(self.clip.position_embedding, std=0.02)
        nn.init.normal_(self.image_newline, std=self.config.out_dim ** -0.5)
        nn.init.normal_(self.view_separator, std=self.config.out_dim ** -0.5)
        self.clip.freeze_patch_embedding()

    def encode_features(self, pixel_values):
        """pixel_values [B, 3, H, W] -> dict of the intermediate features (for collapse diagnostics:
        the neck and compressed grids are where diversity dies first):
          neck [B, neck_channels, H/p, W/p], compressed [B, clip_width, qh, qw] (net_3 output),
          clip [B, qh*qw, clip_width] (CLS dropped), tokens [B, qh*qw, out_dim] (projected),
          grid (qh, qw)."""
        neck, compressed = self.sam(pixel_values)
        clip = self.clip(compressed)[:, 1:]
        sam_tokens = compressed.flatten(2).transpose(1, 2)
        tokens = self.projector(torch.cat([clip, sam_tokens.to(clip.dtype)], dim=-1))
        return dict(neck=neck, compressed=compressed, clip=clip, tokens=tokens, grid=tuple(compressed.shape[-2:]))

    def forward(self, pixel_values):
        """pixel_values [B, 3, H, W] (any H, W multiples of the patch size) -> [B, qh*qw, out_dim]."""
        return self.encode_features(pixel_values)["tokens"]

    def _rows(self, grid):
        """[R, C, D] token grid -> [R*(C+1), D]: every row followed by image_newline."""
        R, C, D = grid.shape
        newline = self.image_newline.to(grid.dtype).expand(R, 1, D)
        return torch.cat([grid, newline], dim=1).reshape(R * (C + 1), D)

    def embed_image(self, global_view, tiles=None, grid=None):
        """One image's embedding sequence [N, out_dim], N = num_image_tokens(...).
        global_view [3, H, W] or [1, 3, H, W]; tiles [n, 3, t, t] (row-major, n = wc*hc) with
        grid (wc, hc) for Gundam. Layout: tile mosaic ((qt*hc) rows of qt*wc tokens, each + newline),
        then the global view's rows (each + newline), then view_separator."""
        if global_view.dim() == 3:
            global_view = global_view[None]
        assert global_view.dim() == 4 and global_view.shape[0] == 1, \
            f"embed_image takes one global view [3,H,W] or [1,3,H,W], got {tuple(global_view.shape)}"
        D = self.config.out_dim
        parts = []
        if tiles is not None and tiles.shape[0] > 0:
            assert grid is not None, "tiles need their grid (wc, hc)"
            wc, hc = grid
            assert tiles.shape[0] == wc * hc, f"{tiles.shape[0]} tiles for a {wc}x{hc} grid"
            qth, qtw = grid_size(self.config, tiles.shape[2], tiles.shape[3])
            local = self.forward(tiles).view(hc, wc, qth, qtw, D)
            # tile r*wc + c -> mosaic rows r*qth.., columns c*qtw..: interleave tile rows
            mosaic = local.permute(0, 2, 1, 3, 4).reshape(hc * qth, wc * qtw, D)
            parts.append(self._rows(mosaic))
        qh, qw = grid_size(self.config, global_view.shape[2], global_view.shape[3])
        g = self.forward(global_view)[0].view(qh, qw, D)
        parts.append(self._rows(g))
        parts.append(self.view_separator.to(g.dtype)[None])
        return torch.cat(parts, dim=0)

    def embed_batch(self, pixel_values):
        """Same-size single views batched: [B, 3, H, W] -> [B, qh*(qw+1)+1, out_dim]; equals
        embed_image per view but runs the encoder once for the whole batch."""
        qh, qw = grid_size(self.config, pixel_values.shape[2], pixel_values.shape[3])
        return self.lay_out_batch(self.forward(pixel_values), qh, qw)

    def lay_out_batch(self, tokens, qh, qw):
        """Projected tokens [B, qh*qw, D] of same-size single views -> [B, qh*(qw+1)+1, D]: every row
        followed by image_newline, then view_separator (embed_image's layout, batched)."""
        B, _, D = tokens.shape
        newline = self.image_newline.to(tokens.dtype).expand(B, qh, 1, D)
        rows = torch.cat([tokens.view(B, qh, qw, D), newline], dim=2).reshape(B, qh * (qw + 1), D)
        return torch.cat([rows, self.view_separator.to(tokens.dtype).expand(B, 1, D)], dim=1)

    def num_params(self):
        """Parameter counts by part (works on the meta device): sam (+neck), compressor, clip
        (incl. its frozen patch conv), projector, layout (newline + separator)."""
        count = lambda mod: sum(p.numel() for p in mod.parameters())
        return dict(sam=count(self.sam) - count(self.sam.downsample), compressor=count(self.sam.downsample),
                    clip=count(self.clip), projector=count(self.projector),
                    layout=self.image_newline.numel() + self.view_separator.numel())
