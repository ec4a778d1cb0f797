"""lora_ft.onednn_linear: the prepacked oneDNN linear computes F.linear's product, is switched on only where it may be,
and is switched off again; decoding with it gives the outputs decoding without it gives."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from lora_ft import onednn_linear
from lora_ft.generate import BeamSearchConfig, beam_search

pytestmark = [
    pytest.mark.usefixtures("one_thread"),  # tests/conftest.py
    pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch is built without oneDNN"),
]


def test_the_one_time_check_passes_wherever_torch_has_onednn():
    # Not a skip: a check that wrongly failed would silently give up the speed (and hide the tests below).
    assert onednn_linear.supported()


def test_prepacked_layers_compute_the_same_products():
    torch.manual_seed(0)
    linear, plain_linear = nn.Linear(24, 40), nn.Linear(24, 40, bias=False)
    conv = Conv1D(40, 24)  # transformers' GPT-2 layer: weight stored (in, out)
    nn.init.normal_(conv.bias)
    model = nn.ModuleList([linear, plain_linear, conv])
    x = torch.randn(3, 7, 24)  # batch x positions x features, as in a transformer
    with torch.inference_mode():
        expected = [F.linear(x, linear.weight, linear.bias), F.linear(x, plain_linear.weight), x @ conv.weight + conv.bias]
        with onednn_linear.prepacked_linears(model) as switched:
            got = [linear(x), plain_linear(x), conv(x)]
            assert all("forward" in vars(m) for m in model)
        assert switched == 3
        assert all("forward" not in vars(m) for m in model)  # switched back
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_only_plain_float32_cpu_layers_are_switched():
    class Wrapper(nn.Linear):  # a subclass may compute more than its weight's product
        pass

    offloaded = nn.Linear(4, 4)
    offloaded.forward = lambda x: x  # as accelerate's hooks replace forward on the instance
    model = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4).double(), Wrapper(4, 4), offloaded, nn.Embedding(5, 4)])
    with torch.inference_mode(), onednn_linear.prepacked_linears(model) as switched:
        assert switched == 1
        assert "forward" in vars(model[0]) and "forward" not in vars(model[1]) and "forward" not in vars(model[2])
    assert vars(offloaded)["forward"](7) == 7  # left as it was


def test_switched_back_when_decoding_fails():
    model = nn.ModuleList([nn.Linear(4, 4)])
    with pytest.raises(ZeroDivisionError), torch.inference_mode(), onednn_linear.prepacked_linears(model):
        1 / 0
    assert "forward" not in vars(model[0])


@pytest.mark.parametrize("family", ["gpt2", "llama"])  # Conv1D blocks + a Linear head; Linear everywhere
def test_decoding_with_and_without_prepacked_linears_gives_the_same_outputs(tiny, family, monkeypatch):
    model = tiny.model(family, seed=2)
    with torch.no_grad():  # peaked distributions that depend on the whole context
        gen = torch.Generator().manual_seed(7)
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0.0, 0.5, generator=gen)
    prompts = [[5, 17, 9, 33, 21], [40], [8, 90, 12, 64, 7, 100, 3, 55, 71], [120, 6]]
    cfg = BeamSearchConfig(num_beams=4, length_penalty=0.9, no_repeat_ngram_size=2, max_new_tokens=12,
                           stop_token_ids=tuple(range(2, 128, 9)))
    switched = []
    prepacked = onednn_linear.prepacked_linears

    @contextlib.contextmanager
    def counting(module):
        with prepacked(module) as count:
            switched.append(count)
            yield count

    monkeypatch.setattr(onednn_linear, "prepacked_linears", counting)
    with_onednn = beam_search(model, prompts, cfg, pad_token_id=0)
    without = beam_search(model, prompts, cfg, pad_token_id=0, prepack_linears=False)
    assert with_onednn == without
    assert switched and switched[0] > 0  # the layers were switched in the first call
    assert len(switched) == 1  # and not in the second

