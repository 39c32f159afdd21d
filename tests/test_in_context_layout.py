"""The in-context layout against the spec's position table, written out by hand: clean frames,
target frames, rotary frame indices, per-token timesteps, re-indexing a per-token table, and
reading the target back from a noise_mask."""

import pytest
import torch

from wan_egoexo.errors import InputError
from wan_egoexo.in_context.layout import InContextLayout, reindex_frames, target_frames_from_mask


@pytest.mark.parametrize("has_reference, positions, index", [
    (False, "collaborative", [0, 1, 2, 0, 1, 2]),  # exo->ego, CPE: target = source's t
    (True, "collaborative", [0, 1, 2, 3, 1, 2, 3]),  # ego->exo, CPE: reference 0, source and target 1..F
    (False, "uniform", [0, 1, 2, 3, 4, 5]),
    (True, "uniform", [0, 1, 2, 3, 4, 5, 6]),
])
def test_frame_index_follows_the_spec_table(has_reference, positions, index):
    layout = InContextLayout(3, has_reference, positions)
    assert layout.frame_index().tolist() == index
    assert layout.total_frames == len(index)
    assert layout.clean_frames == len(index) - 3
    assert layout.target == slice(len(index) - 3, len(index))
    assert layout.denoise_mask().tolist() == [0.0] * (len(index) - 3) + [1.0] * 3
    assert layout.needs_reindexing() == (positions == "collaborative")


@pytest.mark.parametrize("has_reference", [False, True])
def test_from_total_frames_inverts_total_frames(has_reference):
    layout = InContextLayout(5, has_reference, "collaborative")
    assert InContextLayout.from_total_frames(layout.total_frames, has_reference) == layout
    with pytest.raises(InputError, match="latent: .* cannot be the in-context sequence"):
        InContextLayout.from_total_frames(layout.total_frames + 1, has_reference)
    with pytest.raises(InputError, match="cannot be the in-context sequence"):
        InContextLayout.from_total_frames(1 if has_reference else 0, has_reference)


def test_bad_layout_arguments_are_named():
    with pytest.raises(InputError, match="positions: 'diagonal'"):
        InContextLayout(3, False, "diagonal")
    with pytest.raises(InputError, match="num_frames"):
        InContextLayout(0, False)


def test_per_token_timesteps_zero_on_clean_tokens():
    layout = InContextLayout(2, True, "collaborative")
    ts = layout.per_token_timesteps(torch.tensor([900.0, 10.5]), tokens_per_frame=3)
    assert ts.shape == (2, 5 * 3)
    assert torch.equal(ts[:, :9], torch.zeros(2, 9))
    assert torch.equal(ts[:, 9:], torch.tensor([[900.0] * 6, [10.5] * 6]))


def test_reindex_frames_picks_whole_frames():
    # a [1, frames * tokens, 2] table whose entries name (frame, token): re-indexing must move whole frames
    frames, tokens = 4, 3
    table = torch.tensor([[f, k] for f in range(frames) for k in range(tokens)], dtype=torch.float32)[None]
    index = torch.tensor([0, 1, 2, 3, 1, 2, 3])
    out = reindex_frames(table, index)
    expected = torch.tensor([[f, k] for f in index.tolist() for k in range(tokens)], dtype=torch.float32)[None]
    assert torch.equal(out, expected)
    with pytest.raises(InputError, match="whole frames"):
        reindex_frames(table[:, :-1], index)


@pytest.mark.parametrize("five_dims", [True, False])
def test_target_frames_from_mask(five_dims):
    layout = InContextLayout(3, True)
    mask = layout.denoise_mask().view(1, 1, -1, 1, 1).expand(2, 1, -1, 4, 6)
    mask = mask if five_dims else mask[:, 0]
    assert target_frames_from_mask(mask, layout.total_frames) == layout.target


@pytest.mark.parametrize("mask, message", [
    (None, "has no video noise_mask"),
    (torch.ones(1, 1, 6, 2, 2), "does not mark"),  # no clean frames
    (torch.zeros(1, 1, 6, 2, 2), "does not mark"),  # no target
    (torch.tensor([0, 1, 0, 1, 1, 1.0]).view(1, 1, 6, 1, 1), "does not mark"),  # not a trailing block
    (torch.tensor([0, 0, 0, 0.5, 1, 1]).view(1, 1, 6, 1, 1), "does not mark"),  # a partly masked frame
    (torch.ones(1, 1, 5, 2, 2), "covers 5 frames"),
])
def test_foreign_masks_are_named(mask, message):
    with pytest.raises(InputError, match=f"samples: .*{message}"):
        target_frames_from_mask(mask, 6)
