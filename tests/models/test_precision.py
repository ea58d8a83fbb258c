"""The CNN-LSTM's fast paths under ``torch.autocast("cpu", dtype=torch.bfloat16)``: forward and
the input-only convolution backward run, the input gradient comes back in float32 and agrees
with the float32 one within bfloat16 tolerance; the float32 path is unchanged."""

from __future__ import annotations

import torch

from seradv.models import CNNLSTM
from seradv.models.fast_paths import conv2d_input_grad


def _frozen_model() -> CNNLSTM:
    torch.manual_seed(0)
    m = CNNLSTM(4, n_frames=58, n_mels=40, n_chunks=2, lstm_units=8).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def _x() -> torch.Tensor:
    return torch.randn(5, 58, 40, generator=torch.Generator().manual_seed(1))


def _logits_and_grad(m: CNNLSTM, x: torch.Tensor, *, bf16: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and the input gradient of their sum, the backward run outside the autocast region."""
    xg = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        z = m(xg)
    (g,) = torch.autograd.grad(z.float().sum(), xg)
    return z.detach().float(), g


def test_bf16_input_gradient_is_float32_and_close_to_fp32():
    m, x = _frozen_model(), _x()
    z32, g32 = _logits_and_grad(m, x, bf16=False)
    z16, g16 = _logits_and_grad(m, x, bf16=True)
    assert g16.dtype == torch.float32 and g16.shape == x.shape
    cos = torch.nn.functional.cosine_similarity(g16.flatten(1), g32.flatten(1), dim=1)
    # bf16 keeps 8 mantissa bits: per input the gradient's direction is kept (cosine 0.95-0.99
    # measured on Sapphire Rapids); the bound leaves room for other CPUs' kernels
    assert bool((cos > 0.9).all()) and float(cos.mean()) > 0.95, cos
    assert torch.allclose(z16, z32, atol=0.05 * float(z32.abs().max()) + 1e-3)


def test_bf16_forward_without_grad_runs():
    m, x = _frozen_model(), _x()
    with torch.no_grad():
        z32 = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z16 = m(x)
    assert torch.allclose(z16.float(), z32, atol=0.05 * float(z32.abs().max()) + 1e-3)


def test_fp32_path_is_unchanged_with_autocast_disabled():
    m, x = _frozen_model(), _x()
    z_a, g_a = _logits_and_grad(m, x, bf16=False)
    xg = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
        z_b = m(xg)
    (g_b,) = torch.autograd.grad(z_b.sum(), xg)
    assert torch.equal(z_a, z_b.detach()) and torch.equal(g_a, g_b)


def test_conv2d_input_grad_casts_to_the_gradient_dtype_and_returns_out_dtype():
    gen = torch.Generator().manual_seed(2)
    gy, w = torch.randn(2, 3, 6, 7, generator=gen), torch.randn(3, 1, 3, 3, generator=gen)
    ref = torch.nn.grad.conv2d_input((2, 1, 8, 9), w, gy)
    out = conv2d_input_grad(gy.bfloat16(), w, out_dtype=torch.float32)
    assert out.dtype == torch.float32
    assert torch.allclose(out, ref, atol=0.05 * float(ref.abs().max()))
