"""The auxiliary CTC loss (nanoocr/ctc.py): targets, a hand-made perfect alignment, rows that cannot
align, and that the gradient reaches the features it reads."""
import math

import torch

from nanoocr.ctc import NUM_CLASSES, OTHER, CTCHead, char_ids, ctc_loss_sum


def test_char_ids_cover_ascii_and_share_one_class_for_the_rest():
    ids = char_ids("Az 9~é€")
    assert ids[:5] == [ord("A") - 31, ord("z") - 31, 1, ord("9") - 31, ord("~") - 31]
    assert ids[5] == ids[6] == OTHER == NUM_CLASSES - 1
    assert 0 not in ids  # 0 is the blank


def _peaked_head(neck_channels):
    """A head that maps one-hot channel c straight to class c (log-prob ~0 for it)."""
    head = CTCHead(neck_channels)
    with torch.no_grad():
        head.proj.weight.zero_()
        head.proj.bias.zero_()
        head.proj.weight[:, :].copy_(torch.eye(NUM_CLASSES, neck_channels) * 50)
    return head


def test_a_perfect_alignment_costs_almost_nothing_and_a_wrong_text_costs_a_lot():
    head = _peaked_head(NUM_CLASSES)
    text = "abba"  # a repeat needs a blank between the two b's
    frames = [char_ids("a")[0], char_ids("b")[0], 0, char_ids("b")[0], char_ids("a")[0], 0]
    neck = torch.zeros(1, NUM_CLASSES, 2, len(frames))
    for t, c in enumerate(frames):
        neck[0, c, :, t] = 1.0  # both rows of the neck agree; the head averages them
    with torch.no_grad():
        good = ctc_loss_sum(head, neck, [text])
        bad = ctc_loss_sum(head, neck, ["abcd"])
    assert float(good) < 1e-3
    assert float(bad) > 10


def test_rows_that_cannot_align_add_zero_not_inf():
    head = CTCHead(8)
    neck = torch.randn(2, 8, 4, 3, requires_grad=True)  # 3 frames
    loss = ctc_loss_sum(head, neck, ["ab", "aaaa"])  # "aaaa" needs 7 frames
    assert math.isfinite(float(loss.detach())) and float(loss.detach()) > 0
    loss.backward()
    assert torch.isfinite(neck.grad).all()
    assert neck.grad[0].abs().sum() > 0 and neck.grad[1].abs().sum() == 0


def test_two_frames_per_column_read_a_twice_denser_sequence():
    """frames_per_column=2 (the compressed token grid): column j yields frames 2j and 2j+1, in order."""
    head = CTCHead(2 * NUM_CLASSES, frames_per_column=2)
    with torch.no_grad():
        head.proj.weight.zero_()
        head.proj.bias.zero_()
        head.proj.weight.copy_(torch.eye(2 * NUM_CLASSES) * 50)  # channel k*NUM_CLASSES + c -> frame k, class c
    text = "xyz"
    frames = [char_ids("x")[0], char_ids("y")[0], char_ids("z")[0], 0]
    feats = torch.zeros(1, 2 * NUM_CLASSES, 1, 2)
    for t, c in enumerate(frames):
        feats[0, (t % 2) * NUM_CLASSES + c, 0, t // 2] = 1.0
    with torch.no_grad():
        good = ctc_loss_sum(head, feats, [text])
        swapped = ctc_loss_sum(head, feats, ["yxz"])
    assert float(good) < 1e-3 and float(swapped) > 10


# -----------------------------------------------------------------------------
# cells: the page recipe's targets

def test_cell_texts_put_each_glyph_in_its_tokens_cell_in_reading_order():
    from nanoocr.ctc import cell_texts
    answer = "ab\ncd"
    # glyph boxes in image pixels (index 2 is the newline: no box); a 2x2 grid of 32-px cells, image == view
    boxes = {0: (2, 2, 10, 12), 1: (40, 4, 48, 14), 3: (4, 20, 12, 30), 4: (36, 40, 44, 50)}
    assert cell_texts(boxes, answer, (2, 2), (1.0, 1.0, 0.0, 0.0), 32) == ["ac", "b", "", "d"]
    # the view is the image scaled by 0.5 and shifted down by 32: everything lands in the lower row
    assert cell_texts(boxes, answer, (2, 2), (0.5, 0.5, 0.0, 32.0), 32) == ["", "", "abcd", ""]


def test_view_geometry_maps_image_pixels_to_the_view():
    import numpy as np
    from PIL import Image

    from nanoocr.image_process import process_image, view_geometry
    img = Image.new("RGB", (200, 100), "white")
    img.putpixel((150, 30), (0, 0, 0))
    for mode in ("tiny", "base", (64, 128)):
        p = process_image(img, mode, image_size=256, multiple=32)
        sx, sy, ox, oy = view_geometry(p)
        view = p["global_view"].mean(0).numpy()
        y, x = np.unravel_index(view.argmin(), view.shape)  # the darkest pixel of the view
        assert abs(x - (ox + sx * 150.5)) <= 1.5 and abs(y - (oy + sy * 30.5)) <= 1.5, (mode, (x, y), (sx, sy, ox, oy))


def test_cell_ctc_loss_is_per_character_and_an_empty_page_costs_its_blanks():
    import torch

    from nanoocr.ctc import CellCTCHead, cell_ctc_loss_sum
    torch.manual_seed(0)
    head = CellCTCHead(8, frames=6)
    tokens = torch.randn(2, 4, 8)
    texts = [["ab", "", "", ""], ["", "", "", ""]]
    total = cell_ctc_loss_sum(head, tokens, texts)
    lp = head(tokens)  # [6, 8, classes]: an empty cell's loss is minus its frames' blank log-probs
    blank = -lp[:, :, 0].sum(0).view(2, 4)
    assert torch.allclose(cell_ctc_loss_sum(head, tokens[1:], texts[1:]), blank[1].sum() / 4)
    assert total > blank[1].sum() / 4 and torch.isfinite(total)
    total.backward()
    assert head.proj.weight.grad.abs().sum() > 0


def test_batch_mode_gives_each_batch_one_mode_and_every_mode_a_turn():
    from nanoocr.vision_dataloader import batch_mode
    modes = ["base", "large", "small", "tiny"]
    drawn = [batch_mode(modes, 42, b) for b in range(64)]
    assert drawn == [batch_mode(modes, 42, b) for b in range(64)] and set(drawn) == set(modes)
    assert batch_mode("base", 42, 7) == "base" and batch_mode((32, 256), 0, 3) == (32, 256)
