"""
CTC for one-line strips: a head that reads characters left to right off a strip's features, its
training loss, and the maths of reading with it (greedy best path, and the prefix score that
nanoocr/joint_decode.py combines with the GPT's).

Why a head at all: trained only through the GPT's next-token loss, a freshly initialised encoder
gets a weak, late signal — the decoder first learns to guess text without looking (dev/design.md §9:
the image-ablation gap stays near zero for hundreds of steps, and the encoder can collapse). A
CTC head reading characters straight off the encoder's features tells it, from step 0, which
strokes matter. The head is a single linear layer, so the features themselves must carry the
character identity. Two places to read (the trainer's ctc_features):

    neck   [B, C, h, w]  the SAM neck, one frame per column
    tokens [B, D, qh, qw] the projected vision tokens the GPT reads, 2**num_convs frames per column
    features --mean over rows--> [B, w, C] --Linear--> per-frame character log-probs
    loss = CTC(log-probs, the answer's characters)

On the tokens the CTC gradient also trains the compressor, CLIP and projector, which the neck
version leaves to the GPT's loss alone (dev/LOG.md, "CTC on the tokens": it reads ~300-500 steps
sooner). A w-frame sequence holds at most ~w/2 characters with repeats (CTC needs a blank between
equal neighbours); rows it cannot align contribute zero (zero_infinity), they are not errors. Only
for one-line strips — a page's characters are not a left-to-right sequence over columns.

The head is part of the model (model.VLM.ctc_head, saved and exported with it). Reading: the head
alone (greedy_decode: the best frame-by-frame path, repeats merged, blanks dropped) is a second,
independent reader of the same vision tokens; joint decoding scores every GPT hypothesis with the
CTC probability that its text begins the strip's character sequence (PrefixScorer), as hybrid
CTC/attention speech recognisers do.
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
        self.init_weights()

    @torch.no_grad()
    def init_weights(self):
        nn.init.normal_(self.proj.weight, std=self.proj.in_features ** -0.5)
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


# -----------------------------------------------------------------------------
# Cells: the page version of the auxiliary loss. A page's characters are no left-to-right sequence
# over columns, but each vision token covers one stride x stride cell of the view, and the characters
# whose glyph centres fall in that cell are a short sequence in reading order (line by line, left to
# right). A linear layer turns each token into CELL_FRAMES CTC frames that must spell its cell's
# characters, so every token learns from step 0 to hold the text under it, as the strip head teaches
# a strip's tokens. A cell holding more characters than its frames can align (the coarse modes' big
# cells) contributes zero (zero_infinity). Training only: it is no reader of a page.

CELL_FRAMES = 24  # a Base-mode cell of the page recipe holds <= ~15 characters (2-3 line fragments)


class CellCTCHead(nn.Module):
    """Vision tokens [B, N, D] -> CTC log-probs [CELL_FRAMES, B*N, NUM_CLASSES], one sequence per token."""

    def __init__(self, channels, frames=CELL_FRAMES):
        super().__init__()
        self.frames = frames
        self.proj = nn.Linear(channels, frames * NUM_CLASSES)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self):
        nn.init.normal_(self.proj.weight, std=self.proj.in_features ** -0.5)
        nn.init.zeros_(self.proj.bias)

    def forward(self, tokens):
        B, N, _ = tokens.shape
        logits = self.proj(tokens.float()).view(B * N, self.frames, NUM_CLASSES)
        return F.log_softmax(logits, dim=-1).transpose(0, 1)


def cell_texts(boxes, answer, grid, geometry, stride):
    """The characters under each vision token, in reading order: boxes {answer index: glyph box
    (x0, y0, x1, y1) in the image's pixels} (synth.render_annotated), geometry (sx, sy, ox, oy) mapping
    image pixels to the view (image_process.view_geometry), grid (qh, qw) of stride-pixel cells ->
    qh*qw strings (raster order, "" for a cell without ink). Answer order is reading order."""
    qh, qw = grid
    sx, sy, ox, oy = geometry
    cells = [[] for _ in range(qh * qw)]
    for i in sorted(boxes):
        x0, y0, x1, y1 = boxes[i]
        r = min(qh - 1, max(0, int((oy + sy * (y0 + y1) / 2) // stride)))
        c = min(qw - 1, max(0, int((ox + sx * (x0 + x1) / 2) // stride)))
        cells[r * qw + c].append(answer[i])
    return ["".join(cell) for cell in cells]


def cell_ctc_loss_sum(head, tokens, texts):
    """Sum over images of its cells' CTC losses divided by its character count plus its number of
    empty cells: per character, as a strip's loss is, with an empty cell (whose loss is the
    log-probability of all blanks) weighing as one character. (A mean over cells let the many empty
    cells drown the few with text, and the encoder collapsed into blanks everywhere; dividing by the
    characters alone let the empty cells' early losses, ~110 nats each, swamp the rest: dev/LOG.md
    "Page recipe".) tokens [B, N, D]; texts: B lists of N strings."""
    B, N, _ = tokens.shape
    assert len(texts) == B and all(len(t) == N for t in texts), (
        f"cell targets for {[len(t) for t in texts]} cells, tokens are {B} x {N}")
    log_probs = head(tokens)
    targets = [char_ids(t) for row in texts for t in row]
    lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
    flat = torch.tensor([i for t in targets for i in t], dtype=torch.long)
    frames = torch.full((B * N,), log_probs.size(0), dtype=torch.long)
    per_cell = F.ctc_loss(log_probs, flat, frames, lengths, blank=0, reduction="none", zero_infinity=True)
    weight = lengths.view(B, N).clamp_min(1).sum(1)  # characters + empty cells, per image
    return (per_cell.view(B, N).sum(1) / weight).sum()


def greedy_decode(log_probs):
    """log-probs [T, B, classes] -> B texts: each frame's best class, repeats merged, blanks dropped.
    The OTHER class (a character outside printable ASCII) has no one spelling: it is dropped."""
    texts = []
    for row in log_probs.argmax(-1).t().tolist():
        out, prev = [], 0
        for c in row:
            if c != prev and c != 0 and c != OTHER:
                out.append(CHARSET[c - 1])
            prev = c
        texts.append("".join(out))
    return texts


NEG_INF = float("-inf")


class PrefixScorer:
    """CTC prefix probabilities for many hypotheses over one batch of strips, extended a character
    at a time (the forward recursion of hybrid CTC/attention decoding, Watanabe et al. 2017).

    For a prefix g and frame t the state holds log r_n[t] (g emitted, frame t inside g's last
    character) and log r_b[t] (g emitted, frame t a blank after it). Extending g by character c:
        phi[t]   = r_b(g)[t] + r_n(g)[t], without r_n if c equals g's last character (CTC needs a blank)
        r_n(h)[t] = (r_n(h)[t-1] + phi[t-1]) * p_t(c)            r_n(h)[0] = p_0(c) if g is empty
        r_b(h)[t] = (r_b(h)[t-1] + r_n(h)[t-1]) * p_t(blank)
        prefix(h) = r_n(h)[0] + sum_t phi[t-1] * p_t(c)   — P(the strip's text begins with h)
        full(h)   = r_n(h)[T-1] + r_b(h)[T-1]               — P(the strip's text is exactly h)
    (products and sums in log space). Every state is a row of tensors, so a whole beam's candidates
    extend together: a loop over the T frames with vector operations over the candidates."""

    def __init__(self, log_probs):
        """log_probs [T, B, classes] from the CTC head (one strip per column of B)."""
        self.lp = log_probs.float().transpose(0, 1).contiguous()  # [B, T, C]
        self.T = self.lp.size(1)

    def empty(self, strips):
        """States of the empty prefix for the given strip indices: dict of tensors, one row each."""
        strips = torch.as_tensor(strips, dtype=torch.long)
        blank = self.lp[strips, :, 0]
        return dict(strip=strips, rn=torch.full_like(blank, NEG_INF), rb=blank.cumsum(1),
                    last=torch.full((len(strips),), -1, dtype=torch.long), empty=torch.ones(len(strips), dtype=torch.bool),
                    prefix=torch.zeros(len(strips)))

    @staticmethod
    def select(state, index):
        index = torch.as_tensor(index, dtype=torch.long)
        return {k: v[index] for k, v in state.items()}

    def extend(self, state, chars):
        """Extend every row of state by its character id (chars [N] long) -> the new states (the
        "prefix" entry is log P(the text begins with the extended prefix))."""
        chars = torch.as_tensor(chars, dtype=torch.long)
        x = self.lp[state["strip"]]                                   # [N, T, C]
        xc = x.gather(2, chars.view(-1, 1, 1).expand(-1, self.T, 1)).squeeze(2)
        xb = x[:, :, 0]
        rn_g = torch.where((state["last"] == chars).unsqueeze(1), torch.full_like(state["rn"], NEG_INF), state["rn"])
        phi = torch.logaddexp(state["rb"], rn_g)                      # [N, T]
        rn = torch.full_like(xc, NEG_INF)
        rb = torch.full_like(xc, NEG_INF)
        rn[:, 0] = torch.where(state["empty"], xc[:, 0], torch.full_like(xc[:, 0], NEG_INF))
        for t in range(1, self.T):
            rn[:, t] = torch.logaddexp(rn[:, t - 1], phi[:, t - 1]) + xc[:, t]
            rb[:, t] = torch.logaddexp(rb[:, t - 1], rn[:, t - 1]) + xb[:, t]
        prefix = torch.logsumexp(torch.cat([rn[:, :1], phi[:, :-1] + xc[:, 1:]], dim=1), dim=1)
        return dict(strip=state["strip"], rn=rn, rb=rb, last=chars, empty=torch.zeros_like(state["empty"]), prefix=prefix)

    def extend_text(self, state, texts):
        """Extend row i of state by every character of texts[i] (texts of any lengths, "" = unchanged)."""
        ids = [char_ids(t) for t in texts]
        for j in range(max((len(i) for i in ids), default=0)):
            rows = [r for r, i in enumerate(ids) if len(i) > j]
            sub = self.extend(self.select(state, rows), [ids[r][j] for r in rows])
            state = {k: v.clone() for k, v in state.items()}
            for k in state:
                state[k][rows] = sub[k]
        return state

    @staticmethod
    def full(state):
        """log P(the strip's text is exactly the prefix) per row."""
        return torch.logaddexp(state["rn"][:, -1], state["rb"][:, -1])
