"""
nanoocr/muon.py: the float32 Muon the trainer uses for matrices (matrix_lr > 0).
"""

import copy

import torch

from nanoocr.muon import Muon, orthogonalize


def test_orthogonalize_pushes_singular_values_towards_one():
    g = torch.Generator().manual_seed(0)
    for shape in [(192, 768), (768, 192), (64, 32)]:
        x = torch.randn(*shape, generator=g) * torch.logspace(-1, 1, shape[1])  # badly conditioned
        s = torch.linalg.svdvals(orthogonalize(x))
        assert orthogonalize(x).shape == x.shape
        assert s.min() > 0.3 and s.max() < 1.3, (shape, s.min(), s.max())  # near the quintic's band
        assert torch.linalg.svdvals(x).max() / torch.linalg.svdvals(x).min() > 8  # the input really was ill-conditioned


def test_muon_equals_torchs_muon_up_to_its_bfloat16():
    # torch.optim.Muon runs the same update in bfloat16; three steps must agree to bf16 precision
    torch.manual_seed(0)
    ws = [torch.randn(48, 96), torch.randn(96, 48)]
    ours = [w.clone().requires_grad_() for w in ws]
    ref = [w.clone().requires_grad_() for w in ws]
    opt_a = Muon(ours, lr=0.02, weight_decay=0.01)
    opt_b = torch.optim.Muon(ref, lr=0.02, weight_decay=0.01, momentum=0.95, nesterov=True, adjust_lr_fn="original")
    for step in range(3):
        grads = [torch.randn_like(w) for w in ws]
        for params, opt in ((ours, opt_a), (ref, opt_b)):
            for p, gr in zip(params, grads):
                p.grad = gr.clone()
            opt.step()
    for a, b, w in zip(ours, ref, ws):
        moved = (b - w).abs().max()
        assert moved > 0.01  # the step is real
        assert (a - b).abs().max() < 0.03 * moved, ((a - b).abs().max(), moved)


def test_muon_state_round_trips():
    w = torch.randn(8, 16, requires_grad=True)
    opt = Muon([w], lr=0.05)
    w.grad = torch.randn(8, 16)
    opt.step()
    w2 = w.detach().clone().requires_grad_()
    opt2 = Muon([w2], lr=0.05)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # as a checkpoint would: no shared tensors
    g = torch.randn(8, 16)
    w.grad, w2.grad = g.clone(), g.clone()
    opt.step()
    opt2.step()
    assert torch.equal(w, w2)
