"""
An auxiliary CTC loss for one-line strips: a training-time crutch for the from-scratch CPU recipe,
off by default (ctc_weight=0) and never part of the model.

Why: trained only through the GPT's next-token loss, a freshly initialised encoder gets a weak,
late signal — the decoder first learns to guess text without looking (dev/design.md §9:
the image-ablation gap stays near zero for hundreds of steps, and the encoder can collapse). A
CTC head reading characters left to right straight off the encoder's features tells it, from
step 0, which strokes matter. The head is a single linear layer, so the features themselves must
carry the character identity. Two places to read (the training script's ctc_features):

    neck   [B, C, h, w]  the SAM neck, one frame per column
    tokens [B, D, qh, qw] the projected vision tokens the GPT reads, 2**num_convs frames per column
    features --mean over rows--> [B, w, C] --Linear--> per-frame character log-probs
    loss = CTC(log-probs, the answer's characters)

On the tokens the CTC gradient also trains the compressor, CLIP and projector, which the neck
version leaves to the GPT's loss alone (dev/LOG.md c3: it reads ~300-500 steps sooner).
A w-frame sequence holds at most ~w/2 characters with repeats (CTC needs a blank between equal
neighbours); rows it cannot align contribute zero (zero_infinity), they are not errors. Only for
one-line strips — a page's characters are not a left-to-right sequence over columns. The head
lives in the training script's optimiser and checkpoints.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

# printable ASCII; anything else (accents, symbols) shares one "other" class
CHARSET = "".join(chr(c) for c in range(32, 127))
_INDEX = {ch: i + 1 for i, ch in enumerate(CHARSET)}   # 0 is CTC's blank
OTHER = len(CHARSET) + 1
NUM_CLASSES = len(CHARSET) + 2


def char_ids(text):
    """Text -> CTC target ids (1..95 printable ASCII, OTHER for the rest)."""
    return [_INDEX.get(ch, OTHER) for ch in text]


class CTCHead(nn.Module):
    """Per-column character log-probs from a feature map: average the rows, then one linear layer
    giving frames_per_column CTC frames per column (2 for the compressed token grid, whose columns
    are twice as wide as the neck's)."""

    def __init__(self, channels, frames_per_column=1):
        super().__init__()
        self.frames_per_column = frames_per_column
        self.proj = nn.Linear(channels, frames_per_column * NUM_CLASSES)
        nn.init.normal_(self.proj.weight, std=channels ** -0.5)
        nn.init.zeros_(self.proj.bias)

    def forward(self, features):
        """features [B, C, h, w] -> log-probs [w * frames_per_column, B, NUM_CLASSES] (CTC's time-major layout)."""
        B, _, _, w = features.shape
        cols = features.float().mean(dim=2).transpose(1, 2)  # [B, w, C]
        logits = self.proj(cols).view(B, w * self.frames_per_column, NUM_CLASSES)
        return F.log_softmax(logits, dim=-1).transpose(0, 1)


def ctc_loss_sum(head, features, answers):
    """Sum over rows of each row's CTC loss divided by its character count (so a long line does
    not outweigh a short one). answers: one string per image row, in the batch's image order."""
    assert features.size(0) == len(answers), f"{features.size(0)} feature maps for {len(answers)} answers"
    log_probs = head(features)
    targets = [char_ids(a) for a in answers]
    lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
    flat = torch.tensor([i for t in targets for i in t], dtype=torch.long)
    frames = torch.full((len(answers),), log_probs.size(0), dtype=torch.long)
    per_row = F.ctc_loss(log_probs, flat, frames, lengths, blank=0, reduction="none", zero_infinity=True)
    return (per_row / lengths.clamp_min(1)).sum()
