"""predict_flow against independent computations: the authors' forward re-derived from the spec,
a bare diffusers forward (uniform positions), and the rotary phases of each part."""

import pytest
import torch

from wan_egoexo.errors import InputError
from wan_egoexo.in_context.predict_flow import predict_flow
from wan_egoexo.in_context.layout import InContextLayout
from wan_egoexo.in_context.positions import rotary_tables

B, C, F, H, W, L, TEXT = 2, 48, 3, 4, 6, 7, 32


def _inputs(seed=1, reference=False):
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(B, C, F, H, W, generator=g)
    source = torch.randn(B, C, F, H, W, generator=g)
    ref = torch.randn(B, C, 1, H, W, generator=g) if reference else None
    text = torch.randn(B, L, TEXT, generator=g)
    t = torch.tensor([900.0, 250.0])
    return target, source, ref, text, t


def authors_forward(model, target, t, text, source, reference, collaborative):
    """The authors' in-context forward, re-derived from the spec without predict_flow's code:
    each part's rotary table comes from the model's own rope called on that part alone
    (collaborative) or on the whole sequence (uniform); tokens are run block by block."""
    rope = model.rope
    parts = ([reference] if reference is not None else []) + [source, target]
    if collaborative and reference is not None:
        ref_src = rope(torch.cat([reference, source], dim=2))  # t = 0..F
        cut = ref_src[0].shape[1] // (F + 1)  # tokens per frame: target repeats frames 1..F
        rot = tuple(torch.cat([e, e[:, cut:]], dim=1) for e in ref_src)
    elif collaborative:
        rot = tuple(torch.cat([a, b], dim=1) for a, b in zip(rope(source), rope(target)))
    else:
        rot = rope(torch.cat(parts, dim=2))
    x = torch.cat(parts, dim=2)
    tokens = model.patch_embedding(x).flatten(2).transpose(1, 2)
    n_target = target.shape[2] * (H // 2) * (W // 2)
    ts = torch.cat([torch.zeros(B, tokens.shape[1] - n_target), t[:, None].expand(B, n_target)], dim=1)
    temb, proj, ctx, _ = model.condition_embedder(ts.flatten(), text, None, timestep_seq_len=ts.shape[1])
    proj = proj.unflatten(2, (6, -1))
    for block in model.blocks:
        tokens = block(tokens, ctx, proj, rot)
    shift, scale = (model.scale_shift_table.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, dim=2)
    tokens = (model.norm_out(tokens.float()) * (1 + scale.squeeze(2)) + shift.squeeze(2)).type_as(tokens)
    tokens = model.proj_out(tokens)[:, -n_target:]
    out = tokens.reshape(B, F, H // 2, W // 2, 1, 2, 2, C).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return out.flatten(6, 7).flatten(4, 5).flatten(2, 3)


@pytest.mark.parametrize("reference", [False, True], ids=["exo2ego", "ego2exo"])
@pytest.mark.parametrize("positions", ["collaborative", "uniform"])
@torch.no_grad()
def test_predict_flow_equals_authors_forward(tiny_transformer, reference, positions):
    target, source, ref, text, t = _inputs(reference=reference)
    ours = predict_flow(tiny_transformer, target, t, text, source, ref, positions=positions)
    theirs = authors_forward(tiny_transformer, target, t, text, source, ref, positions == "collaborative")
    assert ours.shape == target.shape
    assert torch.equal(ours, theirs)  # same math, same kernels: bit-identical


@pytest.mark.parametrize("reference", [False, True])
@torch.no_grad()
def test_uniform_equals_bare_diffusers_forward_cut_to_target(tiny_transformer, reference):
    target, source, ref, text, t = _inputs(seed=3, reference=reference)
    parts = ([ref] if reference else []) + [source, target]
    x = torch.cat(parts, dim=2)
    tokens_per_frame = (H // 2) * (W // 2)
    n_clean = (x.shape[2] - F) * tokens_per_frame
    per_token = torch.cat([torch.zeros(B, n_clean), t[:, None].expand(B, F * tokens_per_frame)], dim=1)
    bare = tiny_transformer(x, per_token, text, return_dict=False)[0][:, :, -F:]
    ours = predict_flow(tiny_transformer, target, t, text, source, ref, positions="uniform")
    assert torch.equal(ours, bare)


def test_collaborative_phases_shared_between_source_and_target(tiny_transformer):
    rope = tiny_transformer.rope
    for has_ref in (False, True):
        index = InContextLayout(F, has_ref, "collaborative").frame_index()
        cos, sin = rotary_tables(rope, index, H // 2, W // 2)
        per_frame = (H // 2) * (W // 2)
        off = per_frame if has_ref else 0
        src = slice(off, off + F * per_frame)
        tgt = slice(off + F * per_frame, off + 2 * F * per_frame)
        assert torch.equal(cos[:, src], cos[:, tgt]) and torch.equal(sin[:, src], sin[:, tgt])
        # the source's phases are those a bare rope gives a clip starting at frame 0 (exo2ego) or 1 (ego2exo)
        start = 1 if has_ref else 0
        bare_cos, _ = rope(torch.zeros(1, C, F + start, H, W))
        assert torch.equal(cos[:, src], bare_cos[:, start * per_frame:])
        if has_ref:
            assert torch.equal(cos[:, :per_frame], bare_cos[:, :per_frame])


@torch.no_grad()
def test_per_token_timesteps_zero_on_source_and_reference(tiny_transformer):
    seen = {}

    def record(_module, args):
        seen["t"] = args[0].clone()

    handle = tiny_transformer.condition_embedder.register_forward_pre_hook(record)
    try:
        target, source, ref, text, t = _inputs(reference=True)
        predict_flow(tiny_transformer, target, t, text, source, ref)
    finally:
        handle.remove()
    per_frame = (H // 2) * (W // 2)
    ts = seen["t"].view(B, -1)
    assert ts.shape[1] == (1 + 2 * F) * per_frame
    assert torch.all(ts[:, : (1 + F) * per_frame] == 0)
    assert torch.equal(ts[:, (1 + F) * per_frame:], t[:, None].expand(B, F * per_frame))


@torch.no_grad()
def test_number_timestep_and_rope_hook_removed(tiny_transformer):
    target, source, _, text, _ = _inputs()
    a = predict_flow(tiny_transformer, target, 500, text, source)
    b = predict_flow(tiny_transformer, target, torch.tensor([500.0, 500.0]), text, source)
    assert torch.equal(a, b)
    assert not tiny_transformer.rope._forward_hooks


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(source=torch.zeros(B, C, F + 1, H, W)), "same shape"),
        (dict(target=torch.zeros(B, 16, F, H, W), source=torch.zeros(B, 16, F, H, W)), "48"),
        (dict(reference=torch.zeros(B, C, 2, H, W)), "reference"),
        (dict(text_embeds=torch.zeros(B, 600, TEXT)), "text_embeds"),
        (dict(timestep=torch.zeros(3)), "timestep"),
        (dict(positions="diagonal"), "positions"),
        (dict(target=torch.zeros(B, C, F, 5, W), source=torch.zeros(B, C, F, 5, W)), "multiples"),
    ],
)
def test_bad_inputs_are_named(tiny_transformer, change, message):
    target, source, _, text, t = _inputs()
    kwargs = dict(target=target, timestep=t, text_embeds=text, source=source, reference=None)
    kwargs.update(change)
    with pytest.raises(InputError, match=message):
        predict_flow(tiny_transformer, **kwargs)
