"""The in-context input of one window (wan_egoexo/in_context/window_input.py) and the native glue
around it (nodes/native_windows.py) without a running ComfyUI (the nodes import a host's comfy_api): the window's sequence is [reference?,
its own source frames, its target] with 0 timesteps on the clean frames, the wrapper drops 0.33's
causal anchor frame and cuts the output back, the rope patch passes on newer keywords, and the
whole-clip LATENT refuses context windows. (Their numbers inside ComfyUI are in
tests/comfyui/test_native_windows.py.)"""

import types

import pytest
import torch

import stub_comfy_host  # noqa: F401  first: puts ComfyUI's comfy_api (the nodes' V3 schema) within reach
from nodes.native_context import InContextRope
from nodes.native_windows import InContextWindows, RefuseContextWindows
from wan_egoexo.errors import InputError
from wan_egoexo.in_context.layout import InContextLayout
from wan_egoexo.in_context.window_input import in_context_window


def clip(frames=10, reference=True):
    g = torch.Generator().manual_seed(0)
    source = torch.randn(1, 3, frames, 2, 4, generator=g)
    return source, (torch.randn(1, 3, 1, 2, 4, generator=g) if reference else None)


@pytest.mark.parametrize("has_reference", [False, True])
def test_window_sequence_is_reference_its_own_source_frames_and_target(has_reference):
    source, reference = clip(reference=has_reference)
    frames = [4, 5, 6, 7]
    target = torch.randn(2, 3, 4, 2, 4)  # cond and uncond batched
    t = torch.tensor([700.0, 700.0])
    parts = in_context_window(target, t, source, reference, frames)
    lead = 1 if has_reference else 0
    assert parts.hidden.shape == (2, 3, lead + 8, 2, 4)
    for b in range(2):
        if has_reference:
            assert torch.equal(parts.hidden[b, :, :1], reference[0])
        assert torch.equal(parts.hidden[b, :, lead:lead + 4], source[0, :, 4:8])
        assert torch.equal(parts.hidden[b, :, parts.layout.target], target[b])
    assert parts.timesteps.tolist() == [[0.0] * (lead + 4) + [700.0] * 4] * 2
    assert parts.layout == InContextLayout(4, has_reference)  # positions local to the window


def test_per_frame_timesteps_of_the_window_or_of_the_whole_clip():
    source, reference = clip()
    target = torch.randn(1, 3, 3, 2, 4)
    per_clip = torch.arange(10.0)[None] * 100
    parts = in_context_window(target, per_clip, source, reference, [2, 3, 4])
    assert parts.timesteps.tolist() == [[0.0] * 4 + [200.0, 300.0, 400.0]]
    parts = in_context_window(target, torch.tensor([[1.0, 2.0, 3.0]]), source, reference, [2, 3, 4])
    assert parts.timesteps.tolist() == [[0.0] * 4 + [1.0, 2.0, 3.0]]


def test_bad_windows_and_latents_are_named():
    source, reference = clip()
    with pytest.raises(InputError, match="latent_image: has 3 latent frames but the source clip has 10"):
        in_context_window(torch.randn(1, 3, 3, 2, 4), torch.tensor([1.0]), source, reference)
    with pytest.raises(InputError, match="context window: covers clip frames"):
        in_context_window(torch.randn(1, 3, 3, 2, 4), torch.tensor([1.0]), source, reference, [8, 9, 10])
    with pytest.raises(InputError, match="does not match the source latents"):
        in_context_window(torch.randn(1, 3, 3, 4, 4), torch.tensor([1.0]), source, reference, [0, 1, 2])
    with pytest.raises(InputError, match="latent batch of 1"):
        in_context_window(torch.randn(1, 3, 3, 2, 4), torch.tensor([[1.0] * 5]), source, reference, [0, 1, 2])


def recording_executor(calls):
    def executor(x, timestep, context, clip_fea, time_dim_concat, transformer_options, **kwargs):
        calls.append(types.SimpleNamespace(x=x, timestep=timestep, kwargs=kwargs))
        return x * 2.0  # a stand-in model: the output is traceable to its input frame
    return executor


@pytest.mark.parametrize("anchor", [None, 3])
def test_wrapper_runs_the_window_and_returns_only_its_target(anchor):
    source, reference = clip()
    wrapper = InContextWindows(source, reference, "collaborative")
    window = types.SimpleNamespace(index_list=[4, 5, 6], causal_anchor_index=anchor)
    x = torch.randn(2, 3, 3 + (anchor is not None), 2, 4)
    calls = []
    out = wrapper(recording_executor(calls), x, torch.tensor([500.0, 500.0]), "text", None, None,
                  {"context_window": window}, extra="passed on")
    (call,) = calls
    assert call.kwargs == {"extra": "passed on"}
    assert call.x.shape[2] == 1 + 3 + 3 and torch.equal(call.x[:, :, 1:4], source[:, :, 4:7].expand(2, -1, -1, -1, -1))
    assert call.timestep.tolist() == [[0.0] * 4 + [500.0] * 3] * 2
    kept = x[:, :, 1:] if anchor is not None else x
    assert out.shape == x.shape  # the handler drops the anchor's slot itself
    assert torch.equal(out[:, :, -3:], kept * 2.0)
    if anchor is not None:
        assert not out[:, :, 0].any()


def test_wrapper_without_windows_runs_the_whole_clip():
    source, _ = clip(frames=3, reference=False)
    calls = []
    x = torch.randn(1, 3, 3, 2, 4)
    out = InContextWindows(source, None, "collaborative")(recording_executor(calls), x, torch.tensor([9.0]), "text",
                                                          transformer_options={})
    assert torch.equal(calls[0].x, torch.cat([source, x], 2)) and torch.equal(out, x * 2.0)


def test_whole_clip_latent_refuses_context_windows_and_is_otherwise_transparent():
    guard = RefuseContextWindows()
    calls = []
    args = (torch.ones(1, 3, 2, 2, 4), torch.tensor([1.0]), "text", None, None)
    guard(recording_executor(calls), *args, {})
    assert len(calls) == 1 and torch.equal(calls[0].x, args[0])
    with pytest.raises(InputError, match="use WorldWander In-Context Windows \\(native\\) instead"):
        guard(recording_executor(calls), *args, {"context_window": types.SimpleNamespace(index_list=[0, 1])})


def test_rope_of_a_window_passes_newer_keywords_on():
    seen = []

    def rope_encode(t, h, w, t_start=0, steps_t=None, steps_h=None, steps_w=None, device=None, dtype=None, **kwargs):
        seen.append((t, kwargs))
        return torch.arange(float(t)).repeat_interleave(h * w // 4).view(1, -1, 1, 1)

    rope = InContextRope(rope_encode, True, "collaborative")
    table = rope(7, 4, 4, transformer_options={"a": 1})
    assert seen[-1] == (4, {"transformer_options": {"a": 1}})  # [ref, 3 source, 3 target] -> indices 0..3
    assert table[0, ::4, 0, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 1.0, 2.0, 3.0]
    rope(5, 4, 4, source_id=2)  # another stream: the plain table, untouched
    assert seen[-1] == (5, {"source_id": 2})
