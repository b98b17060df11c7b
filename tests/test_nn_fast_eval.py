"""The faster evaluation forms of the network's layers equal the layers they replace."""
from __future__ import annotations

import os

import pytest
import torch

from bids_mdpp.nn import fast_eval
from bids_mdpp.nn.densenet import TransitionUp
from bids_mdpp.nn.fast_eval import defining_modules, transposed_conv_as_subpixel
from tiny_networks import one_thread, tiny_network  # noqa: F401 (one_thread: fixture)


@pytest.mark.parametrize("height, width", [(5, 6), (7, 4), (1, 1)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_the_subpixel_form_equals_the_transposed_convolution(height, width, channels_last):
    torch.manual_seed(0)
    conv = torch.nn.ConvTranspose2d(6, 5, kernel_size=3, stride=2)
    x = torch.randn(3, 6, height, width)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    expected = conv(x).detach()
    got = transposed_conv_as_subpixel(x, conv.weight.detach(), conv.bias.detach())
    assert got.shape == expected.shape == (3, 5, 2 * height + 1, 2 * width + 1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    if height * width > 1:   # (a 1×1 input is in both layouts at once)
        assert (got.stride(1) == 1) == channels_last   # a crop of an output in x's layout
    no_bias = transposed_conv_as_subpixel(x, conv.weight.detach(), None)
    torch.testing.assert_close(no_bias + conv.bias.detach().view(1, -1, 1, 1), expected,
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="3×3"):
        transposed_conv_as_subpixel(x, torch.zeros(6, 5, 4, 4), None)


def test_evaluation_mode_runs_the_upsampling_as_an_ordinary_convolution():
    torch.manual_seed(0)
    up = TransitionUp(4)
    x, skip = torch.randn(2, 4, 5, 6), torch.randn(2, 3, 9, 12)
    calls = []
    up.conv.register_forward_pre_hook(lambda *_: calls.append(1))
    trained = up(x, skip).detach()
    assert calls == [1]
    up.eval()
    with torch.inference_mode():
        evaluated = up(x, skip)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = up(x.bfloat16().contiguous(memory_format=torch.channels_last),
                      skip.bfloat16().contiguous(memory_format=torch.channels_last))
    assert calls == [1]   # the transposed module itself did not run in evaluation mode
    torch.testing.assert_close(evaluated, trained, atol=1e-5, rtol=1e-5)
    assert fast.dtype == torch.bfloat16 and fast.shape == (2, 7, 9, 12)
    torch.testing.assert_close(fast.float(), trained, atol=3e-2, rtol=3e-2)
    # the whole network gives the same logits in both forms (dropout off)
    net = tiny_network()
    x = torch.randn(2, net.config.in_channels, 19, 22)
    code = torch.tensor([1.0, 0.0, 1.0])
    with torch.no_grad():
        evaluated = net(x, code)
        net.train()
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eval()
        trained = net(x, code)
    torch.testing.assert_close(evaluated, trained, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_batch_norm_and_relu_equal_the_two_modules(dtype, channels_last):
    torch.manual_seed(0)
    norm = torch.nn.BatchNorm2d(7).eval()
    with torch.no_grad():
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(3, 7, 9, 10).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected = torch.relu(norm(x.float()))
        got = fast_eval.bn_relu(x, norm)
    assert got.dtype == dtype and got.shape == x.shape
    tolerance = 1e-5 if dtype == torch.float32 else 4e-2
    torch.testing.assert_close(got.float(), expected, atol=tolerance, rtol=tolerance)
    assert fast_eval._FUSED_BN_RELU is not None   # x86 CPU builds of torch have oneDNN
    # with gradients on, or in training, the modules run as they are (and stay differentiable)
    x.requires_grad_(True)
    fast_eval.bn_relu(x, norm).float().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_evaluation_without_gradients_equals_evaluation_with_them():
    net = tiny_network()
    x = torch.randn(2, net.config.in_channels, 19, 22)
    code = torch.tensor([1.0, 1.0, 0.0])
    with torch.enable_grad():
        plain = net(x, code).detach()   # batch norm and ReLU as modules
    with torch.inference_mode():
        fused = net(x, code)              # the fused oneDNN path
    torch.testing.assert_close(fused, plain, atol=1e-4, rtol=1e-4)


def test_defining_modules_turns_the_faster_forms_off():
    net = tiny_network()
    calls = []
    for transition in net.up_transitions:
        transition.conv.register_forward_pre_hook(lambda *_: calls.append("transposed"))
    for module in net.modules():
        if isinstance(module, torch.nn.ReLU):
            module.register_forward_pre_hook(lambda *_: calls.append("relu"))
    x = torch.randn(1, net.config.in_channels, 16, 16)
    with torch.inference_mode():
        fast = net(x, torch.ones(3))
        assert calls == []
        with defining_modules():
            plain = net(x, torch.ones(3))
        assert calls.count("transposed") == len(net.up_transitions) and "relu" in calls
        calls.clear()
        net(x, torch.ones(3))
        assert calls == []   # the setting ends with the context
    torch.testing.assert_close(fast, plain, atol=1e-4, rtol=1e-4)


def test_importing_the_network_raises_onednns_primitive_cache():
    # set on import unless the user chose a value (the test process has not)
    assert int(os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"]) >= fast_eval.ONEDNN_PRIMITIVE_CACHE
