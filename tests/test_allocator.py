"""seradv.allocator.reuse_freed_memory: on glibc it takes effect, nests, and changes no number."""

from __future__ import annotations

import platform

import torch

from seradv import allocator
from seradv.allocator import reuse_freed_memory


def _big_op() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 1, 29, 128, generator=g)  # maps of 40 x 16 x 25 x 124 floats: above 32 MiB with the grad
    conv = torch.nn.Conv2d(1, 16, 5)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
        conv.bias.copy_(torch.randn(conv.bias.shape, generator=g))
    return torch.relu(conv(x)).sum(dim=(2, 3))


def test_same_numbers_inside_and_outside_and_nesting():
    ref = _big_op()
    with reuse_freed_memory() as on:
        with reuse_freed_memory() as inner:
            assert inner == on
            assert torch.equal(_big_op(), ref)
        assert allocator._depth == (1 if on else 0)
        assert torch.equal(_big_op(), ref)
    assert allocator._depth == 0
    assert torch.equal(_big_op(), ref)


def test_takes_effect_on_glibc_only():
    with reuse_freed_memory() as on:
        pass
    libc, _ = platform.libc_ver()
    assert on == (libc == "glibc" and allocator._LIBC is not None)
