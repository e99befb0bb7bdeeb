"""Shared by the reference-equivalence tests (dev/design.md §7, the trap): re-randomise a transformers model
so it is a meaningful reference, relative error, and the tiny UnlimitedOcr configs that work."""
import torch


def randomize_(model, seed=0):
    """Every parameter to a non-degenerate value: LayerNorms near identity, position embeddings and
    relative-position tables large enough to matter, other weights N(0, 0.1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            for name, p in m.named_parameters(recurse=False):
                if isinstance(m, torch.nn.LayerNorm) or "layer_norm" in type(m).__name__.lower():
                    p.copy_((1.0 if name == "weight" else 0.0) + 0.1 * torch.randn(p.shape, generator=g))
                elif "pos" in name or "embedding" in name or isinstance(m, torch.nn.Embedding):
                    p.copy_(0.5 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(0.1 * torch.randn(p.shape, generator=g))


def rel_err(ours, ref):
    """Max absolute difference relative to the reference's spread."""
    return ((ours - ref).abs().max() / ref.std()).item()


# A tiny UnlimitedOcr (DeepEncoder + MoE text model) that works (dev/design.md §7)
UNLIMITED_SAM_KW = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, window_size=3,
                        global_attn_indexes=[1], image_size=128, patch_size=16, output_channels=32,
                        downsample_channels=[64, 128], mlp_dim=128)
UNLIMITED_CLIP_KW = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
                         image_size=32, patch_size=16)  # its 2 x 2 grid = the SAM grid / 4
UNLIMITED_TEXT_KW = dict(vocab_size=256, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                         n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1, moe_intermediate_size=64,
                         sliding_window=128)
