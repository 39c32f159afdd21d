"""Device names resolve to the devices tensors report, and a bad name is refused by name."""

import pytest
import torch

from wan_egoexo.devices import resolve_device
from wan_egoexo.errors import InputError


def test_cuda_without_an_index_is_the_current_cuda_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert resolve_device("cuda") == torch.device("cuda", 1)  # what a tensor on it reports
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device(torch.device("cuda")) == torch.device("cuda", 1)


def test_cpu_and_bad_names(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    with pytest.raises(InputError, match=r"device: 'gpu0' is not a device; expected 'cpu', 'cuda'"):
        resolve_device("gpu0")
