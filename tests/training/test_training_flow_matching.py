"""The flow-matching table, weights and loss against an independent float64 computation of the
formulas in the spec ("Reference training settings")."""

import math

import numpy as np
import pytest
import torch

from wan_egoexo_training.step.flow_matching import build_table


def test_table_matches_the_spec_formulas():
    table = build_table(1000, 5.0)
    raw = np.linspace(1.0, 0.0, 1001)[:-1]
    sigmas = 5 * raw / (1 + 4 * raw)
    timesteps = 1000 * sigmas
    y = np.exp(-2 * ((timesteps - 500) / 1000) ** 2)
    weights = (y - y.min()) * 1000 / (y - y.min()).sum()
    assert table.size == 1000
    np.testing.assert_allclose(table.sigmas.numpy(), sigmas, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(table.timesteps.numpy(), timesteps, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(table.weights.numpy(), weights, rtol=1e-4, atol=1e-6)
    assert table.sigmas[0] == 1.0 and 0 < table.sigmas[-1] < 0.01  # 1 kept, the final 0 dropped
    assert math.isclose(float(table.weights.sum()), 1000.0, rel_tol=1e-5)


def test_draw_noisy_and_weighted_loss():
    table = build_table(1000, 5.0)
    generator = torch.Generator().manual_seed(3)
    index = table.draw(4096, generator)
    assert index.min() >= 0 and index.max() <= 999
    assert len(set(index.tolist())) > 900  # uniform over the table
    x0, noise = torch.randn(3, 2, 1, 2, 2), torch.randn(3, 2, 1, 2, 2)
    pick = torch.tensor([0, 500, 999])
    noisy = table.noisy(x0, noise, pick)
    for b, i in enumerate(pick.tolist()):
        sigma = float(table.sigmas[i])
        torch.testing.assert_close(noisy[b], (1 - sigma) * x0[b] + sigma * noise[b])
    prediction = torch.randn_like(x0)
    expected = np.mean([float(table.weights[i]) * ((prediction[b] - (noise[b] - x0[b])) ** 2).numpy()
                        for b, i in enumerate(pick.tolist())])
    assert float(table.loss(prediction, x0, noise, pick)) == pytest.approx(expected, rel=1e-5)
    assert float(table.loss(noise - x0, x0, noise, pick)) == 0.0
