"""
The vision-language model: DeepEncoder + GPT (dev/design.md §1).

    ids  = <|bos|><|user_start|> <|image|>×N \\n prompt <|user_end|><|assistant_start|> answer ...
    x    = wte(ids); x[ids == <|image|>] = DeepEncoder(image) laid out as rows + newlines + separator
    out  = GPT(inputs_embeds=x)

The encoder call is separate (`encode_images`) so that generation computes the vision
embeddings once per image and reuses them for every new token. With no images the forward
is exactly the plain GPT path (text-only samples in Stage 2).
"""

from dataclasses import asdict

import torch
import torch.nn as nn

from nanoocr.ctc import CellCTCHead, CTCHead
from nanoocr.deepencoder import DeepEncoder, DeepEncoderConfig
from nanoocr.gpt import GPT, GPTConfig
from nanoocr.muon import Muon


class VLM(nn.Module):
    def __init__(self, encoder_config, gpt_config, image_token_id, ctc=None):
        super().__init__()
        assert encoder_config.out_dim == gpt_config.n_embd, \
            f"the projector maps to {encoder_config.out_dim} but the GPT width is {gpt_config.n_embd}"
        assert 0 <= image_token_id < gpt_config.vocab_size, \
            f"image_token_id {image_token_id} outside the GPT vocabulary ({gpt_config.vocab_size})"
        self.encoder = DeepEncoder(encoder_config)
        self.gpt = GPT(gpt_config)
        self.image_token_id = image_token_id
        # Optional CTC head (nanoocr/ctc.py): one linear layer that reads characters left to right off
        # a strip's features. Trained by the CPU recipe's auxiliary loss; at reading time it scores the
        # GPT's hypotheses (nanoocr/joint_decode.py); on pages, a cell head teaches each token its cell's
        # characters (training only). ctc = {"features": "tokens" | "neck" | "cells", "decoder":
        # "joint" | "gpt" | "ctc" (how read reads it by default; joint when absent)} or None.
        self.ctc_head, self.ctc_features, self.ctc_decoder = None, None, None
        if ctc:
            self.add_ctc_head(ctc["features"], ctc.get("decoder", "joint"))

    def add_ctc_head(self, features, decoder="joint"):
        """Give the model a CTC head reading the projected vision tokens (2**num_convs frames per token
        column) or the SAM neck (one frame per neck column). Part of the model from then on: in its
        state dict (ctc_head.*), its config ("ctc") and every export. decoder: how `nanoocr read`
        reads the model by default (joint | gpt | ctc, nanoocr/joint_decode.py): which reads it best
        depends on how far the GPT has outgrown the head, so the trainer records the one chosen."""
        assert features in ("tokens", "neck", "cells"), f"ctc features {features!r}: tokens | neck | cells"
        assert decoder in ("joint", "gpt", "ctc"), f"ctc decoder {decoder!r}: joint | gpt | ctc"
        assert features != "cells" or decoder == "gpt", "a cell head trains pages' tokens; it reads nothing: decoder gpt"
        self.ctc_decoder = decoder
        cfg = self.encoder.config
        if features == "cells":  # pages: each token spells the characters of its cell (ctc.CellCTCHead)
            self.ctc_head = CellCTCHead(cfg.out_dim)
        elif features == "tokens":
            self.ctc_head = CTCHead(cfg.out_dim, frames_per_column=2 ** cfg.num_convs)
        else:
            self.ctc_head = CTCHead(cfg.neck_channels)
        self.ctc_features = features
        return self.ctc_head

    @property
    def config(self):
        out = {"encoder": asdict(self.encoder.config), "gpt": asdict(self.gpt.config),
               "image_token_id": self.image_token_id}
        if self.ctc_head is not None:
            out["ctc"] = {"features": self.ctc_features, "decoder": self.ctc_decoder}
        return out

    def ctc_feature_map(self, feats):
        """encoder.encode_features' dict -> the [B, C, h, w] map the CTC head reads."""
        if self.ctc_features == "neck":
            return feats["neck"]
        tokens, (qh, qw) = feats["tokens"], feats["grid"]
        return tokens.transpose(1, 2).reshape(tokens.size(0), -1, qh, qw)

    def encode_with_ctc(self, pixel_values):
        """Same-size strips [B, 3, H, W] -> (vision embeddings [B, N, n_embd] as encode_images gives them,
        CTC log-probs [T, B, classes]): one encoder pass feeds both the GPT and the CTC head."""
        assert self.ctc_head is not None, "this model has no CTC head (trained without ctc_weight)"
        feats = self.encoder.encode_features(pixel_values)
        qh, qw = feats["grid"]
        embeds = self.encoder.lay_out_batch(feats["tokens"], qh, qw)
        return embeds, self.ctc_head(self.ctc_feature_map(feats))

    @torch.no_grad()
    def init_weights(self, proj_std=0.0):
        self.encoder.init_weights()
        self.gpt.init_weights(proj_std=proj_std)
        if self.ctc_head is not None:
            self.ctc_head.init_weights()

    @staticmethod
    def part_of(name):
        """The component a parameter (by its name in this model) belongs to: its learning rate,
        schedule and freeze flag."""
        if name.startswith("gpt."):
            return "gpt"
        if name.startswith("ctc_head."):
            return "ctc"
        if name.startswith(("encoder.projector", "encoder.image_newline", "encoder.view_separator")):
            return "projector"
        return "encoder"

    def setup_optimizers(self, lr_encoder=1e-3, lr_projector=1e-3, lr_gpt=1e-3, weight_decay=0.01,
                         betas=(0.9, 0.95), matrix_lr=0.0, muon_encoder=False, muon_ns_steps=5):
        """[AdamW] or [AdamW, Muon] over the trainable parameters (freeze first), as nanochat's
        GPT.setup_optimizers. AdamW: one lr per component (encoder, projector, gpt; a CTC head at the
        encoder's), no weight decay on vectors (norms, biases, newline/separator: decaying them only
        fights their purpose). With matrix_lr > 0, Muon takes the weights of nn.Linear layers in the
        GPT's blocks (not the embedding or lm_head: nanochat keeps those on AdamW), and with
        muon_encoder those of the encoder and projector: it orthogonalises each 2-D update, which
        suits maps from one hidden space to another; embeddings, heads, norms, biases, conv kernels
        and position tables stay on AdamW. One Muon group per component, so each follows its
        component's schedule (freeze, re-warmup). Every group carries `part` and `initial_lr`."""
        muon_ids = set()
        if matrix_lr > 0:
            for mname, mod in self.named_modules():
                if not isinstance(mod, nn.Linear) or not mod.weight.requires_grad:
                    continue
                in_gpt_blocks = mname.startswith("gpt.") and ".h." in f".{mname}." and "lm_head" not in mname
                if in_gpt_blocks or (muon_encoder and mname.startswith("encoder.")):
                    muon_ids.add(id(mod.weight))
        parts = {"encoder": [], "projector": [], "gpt": [], "ctc": []}
        for name, p in self.named_parameters():
            if p.requires_grad and id(p) not in muon_ids:
                parts[self.part_of(name)].append(p)
        lrs = {"encoder": lr_encoder, "projector": lr_projector, "gpt": lr_gpt, "ctc": lr_encoder}
        groups = []
        for part, params in parts.items():
            for decay in (True, False):
                ps = [p for p in params if (p.dim() >= 2) == decay]
                if ps:
                    groups.append(dict(params=ps, lr=lrs[part], initial_lr=lrs[part], part=part,
                                       weight_decay=weight_decay if decay else 0.0))
        device_type = self.get_device().type
        optimizers = [torch.optim.AdamW(groups, betas=betas, eps=1e-8, fused=False if device_type != "cuda" else None)]
        if matrix_lr > 0:
            by_part = {}
            for name, p in self.named_parameters():
                if id(p) in muon_ids:
                    by_part.setdefault(self.part_of(name), []).append(p)
            optimizers.append(Muon([dict(params=ps, lr=matrix_lr, initial_lr=matrix_lr, part=part)
                                    for part, ps in by_part.items()],
                                   lr=matrix_lr, weight_decay=weight_decay, ns_steps=muon_ns_steps))
        return optimizers

    def get_device(self):
        return self.gpt.get_device()

    def encode_images(self, images):
        """Vision embeddings, one sequence per image, in the layout of dev/design.md §2.
        images: a tensor [B, 3, H, W] of same-size single views -> tensor [B, N, n_embd] (the
        training fast path: one batched encoder call), or a list of dicts from
        image_process.process_image (global_view, tiles, grid) -> list of [N_i, n_embd]."""
        if torch.is_tensor(images):
            return self.encoder.embed_batch(images)
        return [self.encoder.embed_image(im["global_view"], im.get("tiles"), im.get("grid")) for im in images]

    def embed_inputs(self, input_ids, image_embeds):
        """wte(input_ids) with the <|image|> positions overwritten, row by row in order, by the
        image embeddings. The counts must agree exactly — a mismatch is a bug upstream (wrong
        mode, wrong count function) and would otherwise silently shift every image."""
        x = self.gpt.transformer.wte(input_ids)
        is_image = input_ids == self.image_token_id
        n_slots = int(is_image.sum())
        if torch.is_tensor(image_embeds):
            flat = image_embeds.reshape(-1, image_embeds.size(-1))
        else:
            flat = torch.cat([e.reshape(-1, e.size(-1)) for e in image_embeds]) if len(image_embeds) else x.new_zeros(0, x.size(-1))
        if flat.size(0) != n_slots:
            raise ValueError(f"the batch has {n_slots} <|image|> placeholder tokens but the images produced "
                             f"{flat.size(0)} vision embeddings; the placeholder count (num_image_tokens for "
                             f"the mode) and the image preprocessing disagree")
        return x.masked_scatter(is_image.unsqueeze(-1), flat.to(x.dtype))

    def forward(self, input_ids, targets=None, images=None, image_embeds=None, kv_cache=None,
                attention_mask=None, loss_reduction="mean"):
        """input_ids (B, T). images: see encode_images; or precomputed image_embeds. Returns logits
        or the loss (like GPT.forward). A batch without images takes the plain GPT path."""
        if images is not None:
            assert image_embeds is None, "pass images or image_embeds, not both"
            image_embeds = self.encode_images(images)
        if image_embeds is None:
            if kv_cache is None or kv_cache.pos == 0:
                n = int((input_ids == self.image_token_id).sum())
                if n:
                    raise ValueError(f"the batch has {n} <|image|> placeholder tokens but no images were given")
            return self.gpt(input_ids, targets=targets, kv_cache=kv_cache, attention_mask=attention_mask,
                            loss_reduction=loss_reduction)
        x = self.embed_inputs(input_ids, image_embeds)
        return self.gpt(inputs_embeds=x, targets=targets, kv_cache=kv_cache, attention_mask=attention_mask,
                        loss_reduction=loss_reduction)


def build_vlm(encoder_config, gpt_config, image_token_id, device="cpu", proj_std=0.0, ctc=None):
    """Build on the meta device (no memory touched for big presets), materialise, init."""
    if isinstance(encoder_config, dict):
        encoder_config = DeepEncoderConfig(**encoder_config)
    if isinstance(gpt_config, dict):
        gpt_config = GPTConfig(**gpt_config)
    with torch.device("meta"):
        model = VLM(encoder_config, gpt_config, image_token_id, ctc=ctc)
    model.to_empty(device=device)
    model.init_weights(proj_std=proj_std)
    return model


def vlm_from_config(model_config, device="cpu"):
    """A VLM shaped by a checkpoint meta's model_config ({"encoder", "gpt", "image_token_id"}),
    with uninitialised weights (the caller loads a state dict)."""
    with torch.device("meta"):
        model = VLM(DeepEncoderConfig(**model_config["encoder"]), GPTConfig(**model_config["gpt"]),
                    model_config["image_token_id"], ctc=model_config.get("ctc"))
    model.to_empty(device=device)
    model.gpt.init_rotary()
    return model
