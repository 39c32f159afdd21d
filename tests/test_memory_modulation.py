"""Compact per-token modulation against diffusers' default forward: values, memory, fallbacks."""


import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from wan_egoexo.errors import InputError
from wan_egoexo.in_context.predict_flow import predict_flow
from wan_egoexo.memory.modulation import (HOOK_NAME, compact_modulation, compact_modulation_enabled,
                                          enable_compact_modulation, group_size, timestep_segments)
from wan_egoexo.tiny.transformer import build_tiny_transformer

from memory_helpers import memory_inputs, rel_error


# ------------------------------------------------------------------ compact modulation

def test_timestep_segments_match_a_plain_run_length_count():
    per_token = torch.tensor([[0, 0, 0, 5, 5, 9, 9, 9], [0, 0, 0, 7, 7, 9, 9, 9.0]])
    values, lengths = timestep_segments(per_token)
    expected, start = [], 0
    for j in range(1, per_token.shape[1] + 1):  # independent: walk the columns
        if j == per_token.shape[1] or not torch.equal(per_token[:, j], per_token[:, j - 1]):
            expected.append((start, j))
            start = j
    assert lengths == [stop - begin for begin, stop in expected]
    assert torch.equal(values, per_token[:, [begin for begin, _ in expected]])


def test_group_size_divides_every_run():
    assert group_size([12, 12]) == 12  # exo -> ego: two parts, one modulation row each
    assert group_size([14 * 6, 13 * 6]) == 6  # ego -> exo: the reference frame makes it per frame
    assert group_size([5]) == 5


@pytest.mark.parametrize("reference", [True, False], ids=["ego2exo", "exo2ego"])
def test_compact_modulation_matches_default_forward(reference):
    model = build_tiny_transformer(0)
    args = memory_inputs(reference=reference)
    with torch.no_grad():
        default = predict_flow(model, *args)
        with compact_modulation(model):
            assert compact_modulation_enabled(model)
            compact = predict_flow(model, *args)
        after = predict_flow(model, *args)
    assert not compact_modulation_enabled(model)
    # float32: the fused multiply-adds and the embedder's matmul on a few rows instead of N may
    # round the last bit differently.
    torch.testing.assert_close(compact, default, rtol=1e-5, atol=1e-5)
    assert torch.equal(after, default)  # removing the hooks restores diffusers' computation exactly


def test_compact_block_equals_the_default_block_in_float32():
    model = build_tiny_transformer(0)
    block = model.blocks[0]
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, 30, 256, generator=g)
    text = torch.randn(2, 5, 256, generator=g)
    compact_temb = torch.randn(2, 5, 6, 256, generator=g)  # 5 groups of 6 tokens
    full_temb = torch.repeat_interleave(compact_temb, 6, dim=1)
    rotary = model.rope(torch.zeros(1, 48, 30, 2, 2))  # 30 tokens of the 1x2x2 patch grid
    with torch.no_grad():
        expected = block(hidden, text, full_temb, rotary)
        enable_compact_modulation(model)
        block._diffusers_hook.get_hook(HOOK_NAME).groups.count = 5
        got = block(hidden, text, compact_temb, rotary)
    torch.testing.assert_close(got, expected, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("reference", [True, False], ids=["ego2exo", "exo2ego"])
def test_compact_modulation_in_bf16_is_as_close_to_float32_as_the_default(reference):
    """The model-dtype modulation is as close to the float32 forward as diffusers' bf16 default."""
    args = memory_inputs(reference=reference)
    with torch.no_grad():
        exact = predict_flow(build_tiny_transformer(0), *args)
        model = build_tiny_transformer(0).to(torch.bfloat16)
        default = predict_flow(model, *args)
        enable_compact_modulation(model)
        compact = predict_flow(model, *args)
    assert rel_error(default, exact) < 2e-2
    assert rel_error(compact, exact) < 1.25 * rel_error(default, exact)


def test_compact_modulation_with_gradients():
    """Gradients through the latents (what LoRA training needs) are unchanged."""
    target, timestep, text, source, reference = memory_inputs()
    model = build_tiny_transformer(0)
    grads = []
    for use_compact in (False, True):
        leaf = target.clone().requires_grad_(True)
        if use_compact:
            enable_compact_modulation(model)
        predict_flow(model, leaf, timestep, text, source, reference).square().sum().backward()
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-5)


class _LargestStorage(TorchDispatchMode):
    """The largest storage any op output lives in, weights (and views of them) excluded."""

    def __init__(self, model):
        super().__init__()
        self.largest = 0
        self.weights = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor) and leaf.untyped_storage().data_ptr() not in self.weights:
                self.largest = max(self.largest, leaf.untyped_storage().nbytes())
        return out


def test_compact_modulation_never_allocates_a_per_token_modulation_tensor():
    model = build_tiny_transformer(0)
    target, timestep, text, source, reference = memory_inputs()
    tokens = 7 * (8 // 2) * (12 // 2)
    per_token_modulation = 2 * tokens * 6 * 256 * 4  # [B, N, 6, dim] float32
    with torch.no_grad():
        with _LargestStorage(model) as default:
            predict_flow(model, target, timestep, text, source, reference)
        enable_compact_modulation(model)
        with _LargestStorage(model) as compact:
            predict_flow(model, target, timestep, text, source, reference)
    assert default.largest >= per_token_modulation
    assert compact.largest < per_token_modulation / 2


def test_compact_modulation_falls_back_for_many_distinct_timesteps():
    model = build_tiny_transformer(0)
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(1, 48, 2, 8, 8, generator=g)
    tokens = 2 * 4 * 4
    per_token = torch.randperm(tokens, generator=g)[None].float() * 10  # every token its own timestep
    text = torch.randn(1, 3, 32, generator=g)
    with torch.no_grad():
        expected = model(hidden, per_token, text, return_dict=False)[0]
        expected_scalar = model(hidden, torch.tensor([300.0]), text, return_dict=False)[0]
        enable_compact_modulation(model)
        got = model(hidden, per_token, text, return_dict=False)[0]
        assert model.blocks[0]._diffusers_hook.get_hook(HOOK_NAME).groups.count is None  # diffusers' own path
        scalar = model(hidden, torch.tensor([300.0]), text, return_dict=False)[0]  # 1-D timesteps
    assert torch.equal(got, expected) and torch.equal(scalar, expected_scalar)


def test_compact_modulation_rejects_other_models():
    with pytest.raises(InputError, match="WanTransformer3DModel"):
        enable_compact_modulation(torch.nn.Linear(2, 2))
