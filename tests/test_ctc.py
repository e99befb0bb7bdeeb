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
