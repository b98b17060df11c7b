"""The FC-DenseNet and its dynamic head: layout, parameter counts, filter scaling, codes."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bids_mdpp.nn import NetworkConfig, build_network
from tiny_networks import TINY, one_thread, tiny_network  # noqa: F401 (one_thread: fixture)


def n_parameters(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_default_network_has_the_authors_parameter_counts():
    dynamic = build_network()
    assert dynamic.config.in_channels == 15
    assert n_parameters(dynamic) == 1_384_657
    assert tuple(dynamic.first_conv.controller.weight.shape) == (768, 5, 1, 1)
    assert tuple(dynamic.final_conv.weight.shape) == (1, 192, 1, 1)
    static = build_network({"n_contrasts": 4, "dynamic_head": False})
    assert static.config.in_channels == 12
    assert n_parameters(static) == 1_378_753


def test_initialisation_follows_the_authors():
    torch.manual_seed(0)
    net = build_network()
    conv = net.down_blocks[0].layers[0].conv
    assert abs(conv.weight.std().item() - 0.02) < 0.003
    assert torch.all(conv.bias == 0)
    norm = net.down_blocks[0].layers[0].norm
    assert abs(norm.weight.mean().item() - 1.0) < 0.01 and torch.all(norm.bias == 0)


@pytest.mark.parametrize("height,width", [(32, 32), (23, 37), (17, 40)])
def test_any_slice_size_gives_logits_and_features_of_that_size(height, width):
    net = tiny_network()
    x = torch.randn(2, 9, height, width)
    logits, features = net(x, torch.tensor([[1, 0, 1], [1, 1, 1]]), return_features=True)
    assert logits.shape == (2, 1, height, width)
    assert features.shape == (2, 8, height, width)
    assert torch.all(features >= 0)  # the dynamic head's ReLU
    assert torch.equal(net(x, torch.tensor([[1, 0, 1], [1, 1, 1]])), logits)


def test_unit_scales_reproduce_the_static_convolution_exactly():
    net = tiny_network()
    head = net.first_conv
    with torch.no_grad():
        head.controller.weight.zero_()
        head.controller.bias.fill_(1.0)
    x = torch.randn(3, 9, 20, 20)
    expected = F.relu(head.conv(x))
    assert torch.equal(head(x, [1, 0, 1]), expected)  # one code for the batch
    per_sample = head(x, torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 1]]))  # grouped convolution
    torch.testing.assert_close(per_sample, expected, rtol=1e-5, atol=1e-5)


def test_scales_come_from_the_code_in_vu_row_major_order():
    head = tiny_network().first_conv
    code = torch.tensor([[1.0, 0.0, 1.0]])
    weight_scales, bias_scales = head.scales(code)
    params = (head.controller.weight[:, :, 0, 0] @ code[0] + head.controller.bias).detach()
    assert weight_scales.shape == (1, 8, 9) and bias_scales.shape == (1, 8)
    torch.testing.assert_close(weight_scales[0, 2, 5].detach(), params[2 * 9 + 5])
    torch.testing.assert_close(bias_scales[0].detach(), params[72:])


def test_different_codes_give_different_first_layer_outputs():
    net = tiny_network()
    x = torch.randn(1, 9, 16, 16)
    _, full = net(x, [1, 1, 1], return_features=True)
    _, partial = net(x, [1, 0, 1], return_features=True)
    assert (full - partial).abs().max() > 1e-3


def test_a_mixed_batch_equals_each_sample_run_alone():
    net = tiny_network()
    x = torch.randn(3, 9, 24, 20)
    codes = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 1, 1]])
    together = net(x, codes)
    alone = torch.cat([net(x[i:i + 1], codes[i]) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_gradients_reach_the_controller_and_the_static_kernel():
    net = tiny_network().train()
    x = torch.randn(2, 9, 16, 16)
    net(x, torch.tensor([[1, 0, 1], [1, 1, 0]])).sum().backward()
    assert net.first_conv.controller.weight.grad.abs().sum() > 0
    assert net.first_conv.controller.bias.grad.abs().sum() > 0
    assert net.first_conv.conv.weight.grad.abs().sum() > 0


def test_static_network_ignores_the_code():
    net = tiny_network(dynamic=False)
    x = torch.randn(2, 9, 16, 16)
    assert not hasattr(net.first_conv, "controller")
    assert torch.equal(net(x, [1, 0, 0]), net(x, None))


def test_bad_inputs_and_codes_are_rejected():
    net = tiny_network()
    with pytest.raises(ValueError, match=r"\(B, 9, H, W\)"):
        net(torch.randn(1, 6, 16, 16), [1, 1, 1])
    with pytest.raises(ValueError, match="modality code"):
        net(torch.randn(1, 9, 16, 16))
    with pytest.raises(ValueError, match=r"got \(2, 2\)"):
        net(torch.randn(3, 9, 16, 16), torch.ones(2, 2))


def test_config_round_trips_and_rejects_bad_options():
    config = NetworkConfig(**TINY, n_contrasts=4)
    assert NetworkConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["down_blocks"] == [1, 2]
    with pytest.raises(ValueError, match="unknown network option.*depth"):
        NetworkConfig.from_dict({"depth": 3})
    with pytest.raises(ValueError, match="growth_rate"):
        NetworkConfig(growth_rate=0)
    with pytest.raises(ValueError, match="odd"):
        NetworkConfig(slices_per_contrast=2)
    with pytest.raises(ValueError, match="equal length"):
        NetworkConfig(down_blocks=(4, 4), up_blocks=(4,))
    with pytest.raises(ValueError, match="dropout"):
        NetworkConfig(dropout=1.0)
    with pytest.raises(ValueError, match="dynamic_head"):
        NetworkConfig(dynamic_head="yes")


def test_under_cpu_autocast_the_transposed_convolutions_run_in_fp32():
    from bids_mdpp.nn.densenet import TransitionUp

    torch.manual_seed(0)
    up = TransitionUp(4)
    x, skip = torch.randn(2, 4, 5, 6), torch.randn(2, 3, 10, 12)
    seen = []
    up.conv.register_forward_pre_hook(lambda _, args: seen.append(args[0].dtype))
    exact = up(x, skip)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = up(x.bfloat16(), skip.bfloat16())
    assert seen == [torch.float32, torch.float32]
    assert fast.dtype == torch.bfloat16 and fast.shape == exact.shape == (2, 7, 10, 12)
    torch.testing.assert_close(fast.float(), exact, atol=2e-2, rtol=2e-2)
    # the whole network still trains under autocast: gradients pass the casts
    net = tiny_network().train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = net(torch.randn(2, net.config.in_channels, 16, 16), torch.ones(1, 3))
    logits.float().sum().backward()
    assert all(t.conv.weight.grad is not None and t.conv.weight.grad.abs().sum() > 0
               for t in net.up_transitions)


def test_new_features_only_blocks_return_the_new_features_in_order():
    from bids_mdpp.nn.densenet import DenseBlock

    torch.manual_seed(0)
    both = DenseBlock(5, 3, 3, 0.0).eval()
    new_only = DenseBlock(5, 3, 3, 0.0, new_features_only=True).eval()
    new_only.load_state_dict(both.state_dict())
    x = torch.randn(2, 5, 8, 8)
    with torch.no_grad():
        full, new = both(x), new_only(x)
    assert full.shape == (2, 14, 8, 8) and new.shape == (2, 9, 8, 8)
    torch.testing.assert_close(full[:, :5], x)
    torch.testing.assert_close(new, full[:, 5:])
