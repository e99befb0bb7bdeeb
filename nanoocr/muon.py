"""
Muon: momentum SGD whose update for a weight matrix is orthogonalised (all its singular values
pushed towards 1) by a few Newton-Schulz iterations. nanochat trains its transformer matrices
with it; embeddings, heads, norms and biases stay on AdamW (scripts/vis_tok_train.py decides which
is which).

torch.optim.Muon exists (torch >= 2.9) but always runs the iteration in bfloat16, which CPUs
without native bf16 emulate, so it made CPU training steps several times slower (the measurement:
dev/LOG.md "Histories moved out of docstrings").
This one iterates in float32 on CPU and in bfloat16 on GPUs, and otherwise takes the same update
(Keller Jordan's quintic coefficients; Nesterov momentum; step scaled by sqrt(max(1, rows / cols)),
torch's adjust_lr_fn="original"; decoupled weight decay).
"""

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(grad, steps=5, eps=1e-7):
    """G -> roughly U V^T of G's SVD (singular values land in ~[0.7, 1.2]: the quintic is tuned for
    speed of convergence near zero, not exactness)."""
    a, b, c = NS_COEFFICIENTS
    x = grad.bfloat16() if grad.is_cuda else grad.float()
    tall = x.size(0) > x.size(1)
    if tall:  # iterate on the wide orientation: X X^T is the smaller Gram matrix
        x = x.T
    x = x / (x.norm() + eps)  # spectral norm <= Frobenius norm <= 1
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(grad.dtype)


class Muon(torch.optim.Optimizer):
    """Muon for 2-D parameters. Param groups may carry extra keys (the trainer's "part",
    "initial_lr"); state_dict / load_state_dict are torch's, so checkpoints resume exactly."""

    def __init__(self, params, lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.0, ns_steps=5):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                                      ns_steps=ns_steps))
        for group in self.param_groups:
            for p in group["params"]:
                assert p.dim() == 2, f"Muon updates matrices only; got a parameter of shape {tuple(p.shape)}"

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, mom, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - mom)
                g = p.grad.lerp(buf, mom) if group["nesterov"] else buf
                update = orthogonalize(g, group["ns_steps"])
                if wd:
                    p.mul_(1 - lr * wd)
                p.add_(update, alpha=-lr * max(1.0, p.size(0) / p.size(1)) ** 0.5)
