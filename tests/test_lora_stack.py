"""activate_loras: the transformer carries exactly the requested chain, whatever ran before."""

import torch

from wan_egoexo.in_context.predict_flow import predict_flow
from wan_egoexo.lora import activate_loras, active_loras, apply_lora
from wan_egoexo.tiny.lora import random_lora_state_dict, save_worldwander_ckpt
from wan_egoexo.tiny.transformer import build_tiny_transformer


def _flow(model):
    g = torch.Generator().manual_seed(2)
    target, source = torch.randn(2, 1, 48, 2, 4, 4, generator=g)
    with torch.no_grad():
        return predict_flow(model, target, 600.0, torch.randn(1, 5, 32, generator=g), source)


def _fresh_with(chain):
    model = build_tiny_transformer()
    for path, strength in chain:
        apply_lora(model, path, strength)
    return _flow(model)


def test_chain_changes_never_accumulate(tmp_path):
    base = build_tiny_transformer()
    a = save_worldwander_ckpt(random_lora_state_dict(base, rank=4, seed=1), tmp_path / "a.ckpt")
    b = save_worldwander_ckpt(random_lora_state_dict(base, rank=2, seed=2), tmp_path / "b.ckpt")
    before = {k: v.clone() for k, v in base.state_dict().items()}
    plain = _flow(base)

    model = build_tiny_transformer()
    runs = [[(a, 1.0)], [(a, 0.5), (b, 1.0)], [(a, 0.5), (b, 1.0)], [(b, 0.25)], [(a, 0.5), (a, 0.5)]]
    for chain in runs:
        activate_loras(model, chain)
        torch.testing.assert_close(_flow(model), _fresh_with([(p, s) for p, s in chain]), rtol=1e-5, atol=1e-6)
    assert len(active_loras(model)) == 1 and list(active_loras(model).values()) == [1.0]

    activate_loras(model, [])
    assert active_loras(model) == {}
    assert torch.equal(_flow(model), plain)
    after = model.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)
