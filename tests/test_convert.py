"""The authors'-weights converter, checked against a mirror of the authors' network.

``AuthorsNet`` below re-states the released architecture from its description (METHOD.md):
module names give the authors' state-dict keys; it ends with tanh and reads the probability
as (y + 1)/2; its dynamic head scales the first kernels per sample.
"""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bids_mdpp.cli import main
from bids_mdpp.convert import import_authors_weights, rename_key
from bids_mdpp.errors import ModelError, UsageError
from bids_mdpp.model import load_model
from bids_mdpp.nn import torch_threads


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors run fastest on one thread (and do not fight other processes for cores)."""
    with torch_threads(1):
        yield


GROWTH, LAYERS, FIRST = 12, 4, 48


def dense_layer(channels: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict(norm=nn.BatchNorm2d(channels), relu=nn.ReLU(),
                                     conv=nn.Conv2d(channels, GROWTH, 3, padding=1), drop=nn.Dropout2d(0.2)))


class AuthorsBlock(nn.Module):
    def __init__(self, channels: int, only_new: bool):
        super().__init__()
        self.only_new = only_new
        self.layers = nn.ModuleList(dense_layer(channels + GROWTH * i) for i in range(LAYERS))

    def forward(self, x):
        new = []
        for layer in self.layers:
            new.append(layer(x))
            x = torch.cat([x, new[-1]], 1)
        return torch.cat(new, 1) if self.only_new else x


class AuthorsUp(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.convTrans = nn.ConvTranspose2d(channels, channels, 3, stride=2)

    def forward(self, x, skip):
        up = self.convTrans(x)
        dy, dx = (up.shape[2] - skip.shape[2]) // 2, (up.shape[3] - skip.shape[3]) // 2
        return torch.cat([up[:, :, dy:dy + skip.shape[2], dx:dx + skip.shape[3]], skip], 1)


class AuthorsBottleneck(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bottleneck = AuthorsBlock(channels, only_new=True)


class AuthorsNet(nn.Module):
    """FC-DenseNet-57 under the authors' key names; ``forward`` returns tanh outputs (B, 1, H, W)."""

    def __init__(self, in_channels: int = 15, dynamic: bool = True):
        super().__init__()
        self.firstconv = nn.Conv2d(in_channels, FIRST, 3, padding=1)
        widths, channels = [], FIRST
        self.denseBlocksDown, self.transDownBlocks = nn.ModuleList(), nn.ModuleList()
        for _ in range(5):
            self.denseBlocksDown.append(AuthorsBlock(channels, only_new=False))
            channels += GROWTH * LAYERS
            widths.append(channels)
            self.transDownBlocks.append(nn.Sequential(OrderedDict(
                norm=nn.BatchNorm2d(channels), relu=nn.ReLU(), conv=nn.Conv2d(channels, channels, 1),
                drop=nn.Dropout2d(0.2), maxpool=nn.MaxPool2d(2))))
        self.bottleneck = AuthorsBottleneck(channels)
        self.transUpBlocks = nn.ModuleList(AuthorsUp(GROWTH * LAYERS) for _ in range(5))
        self.denseBlocksUp = nn.ModuleList(
            AuthorsBlock(GROWTH * LAYERS + widths[4 - i], only_new=i < 4) for i in range(5))
        self.finalConv = nn.Conv2d(widths[0] + GROWTH * LAYERS * 2, 1, 1)
        if dynamic:
            self.controller = nn.Conv2d(5, in_channels * FIRST + FIRST, 1)

    def forward(self, x, mc=None):
        if hasattr(self, "controller"):
            n, u = x.shape[:2]
            params = self.controller(mc[:, :, None, None].float()).reshape(n, -1)
            kernel = self.firstconv.weight[None] * params[:, :u * FIRST].reshape(n, FIRST, u, 1, 1)
            bias = self.firstconv.bias[None] * params[:, u * FIRST:]
            out = F.conv2d(x.reshape(1, n * u, *x.shape[2:]), kernel.reshape(n * FIRST, u, 3, 3),
                           bias.reshape(-1), padding=1, groups=n)
            out = F.relu(out.reshape(n, FIRST, *x.shape[2:]))
        else:
            out = self.firstconv(x)
        skips = []
        for block, down in zip(self.denseBlocksDown, self.transDownBlocks):
            out = block(out)
            skips.append(out)
            out = down(out)
        out = self.bottleneck.bottleneck(out)
        for up, block in zip(self.transUpBlocks, self.denseBlocksUp):
            out = block(up(out, skips.pop()))
        return torch.tanh(self.finalConv(out))


def randomised(net: nn.Module, seed: int = 0) -> nn.Module:
    """Weights large enough for varied outputs, and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(module.weight, 0.0, 0.06)
            nn.init.normal_(module.bias, 0.0, 0.05)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, 0.1)
            nn.init.normal_(module.bias, 0.0, 0.1)
            module.running_mean.normal_(0.0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.fixture(scope="module")
def dynamic_weights(tmp_path_factory):
    net = randomised(AuthorsNet())
    path = tmp_path_factory.mktemp("authors") / "umcl_net_G_best.pth"
    torch.save(net.state_dict(), path)
    return net, path


def authors_probability(net: AuthorsNet, x: torch.Tensor, mc: torch.Tensor | None) -> torch.Tensor:
    with torch.no_grad():
        return (net(x, mc) + 1) / 2


def our_probability(directory, x: torch.Tensor, code: torch.Tensor | None) -> torch.Tensor:
    with torch.no_grad():
        return torch.sigmoid(load_model(directory).network(x, code))


def test_the_authors_keys_map_onto_ours():
    assert rename_key("denseBlocksDown.3.layers.2.norm.running_var") == "down_blocks.3.layers.2.norm.running_var"
    assert rename_key("transUpBlocks.4.convTrans.weight") == "up_transitions.4.conv.weight"
    assert rename_key("bottleneck.bottleneck.layers.0.conv.bias") == "bottleneck.layers.0.conv.bias"
    assert rename_key("transDownBlocks.1.conv.weight") == "down_transitions.1.conv.weight"
    assert rename_key("something.else") is None
    shapes = {k: tuple(v.shape) for k, v in AuthorsNet().state_dict().items()}
    assert shapes["finalConv.weight"] == (1, 192, 1, 1)
    assert shapes["controller.weight"] == (768, 5, 1, 1)


def test_umcl_dynamic_model_predicts_what_the_authors_model_predicts(dynamic_weights, tmp_path):
    net, path = dynamic_weights
    out = import_authors_weights(path, tmp_path / "umcl", "umcl")
    loaded = load_model(out)
    card = loaded.card
    assert card.contrasts == ("T1w", "FLAIR", "T2w", "ceT1w") and card.mode == "moddrop++"
    assert tuple(loaded.network.first_conv.controller.weight.shape) == (624, 4, 1, 1)
    assert card.training["dropped_input_slots"] == ["PDw"] and card.training["weights_file"] == path.name
    x = torch.randn(3, 15, 37, 44)
    x[:, 9:12] = 0  # UMCL has no PDw: its slot was always empty
    mc = torch.tensor([[1, 1, 1, 0, 1], [0, 1, 0, 0, 1], [1, 0, 0, 0, 0]])
    x[1, 0:3] = x[1, 6:9] = x[2, 3:9] = x[2, 12:15] = 0  # the contrasts each code says are missing
    theirs = authors_probability(net, x, mc)
    keep = [c for c in range(15) if not 9 <= c < 12]
    ours = our_probability(out, x[:, keep], mc[:, [0, 1, 2, 4]])
    assert theirs.std() > 0.05  # the mirror's output is not flat
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-5)


def test_isbi_static_model_and_module_prefixes(tmp_path):
    net = randomised(AuthorsNet(dynamic=False), seed=1)
    path = tmp_path / "isbi_net_G.pth"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)  # DataParallel
    out = import_authors_weights(path, tmp_path / "isbi", "ISBI")
    card = load_model(out).card
    assert card.contrasts == ("T1w", "FLAIR", "T2w", "PDw") and card.mode == "moddrop"
    x = torch.randn(2, 15, 32, 40)
    x[:, 12:15] = 0  # ISBI has no ceT1w
    torch.testing.assert_close(our_probability(out, x[:, :12], None), authors_probability(net, x, None),
                               rtol=0, atol=2e-5)


def test_independent_model_of_a_subset(tmp_path):
    net = randomised(AuthorsNet(in_channels=6, dynamic=False), seed=2)
    path = tmp_path / "im_23_net_G.pth"
    torch.save(net.state_dict(), path)
    out = import_authors_weights(path, tmp_path / "im", "umcl", contrasts=["T2w", "FLAIR"])
    card = load_model(out).card
    assert card.contrasts == ("FLAIR", "T2w") and card.mode == "independent"
    x = torch.randn(1, 6, 33, 33)
    torch.testing.assert_close(our_probability(out, x, None), authors_probability(net, x, None),
                               rtol=0, atol=2e-5)


def test_bad_files_are_model_errors_naming_them(dynamic_weights, tmp_path):
    net, _ = dynamic_weights
    cases = {
        "noise.pth": bytes(range(256)) * 4,
        "extra.pth": {**net.state_dict(), "classifier.weight": torch.zeros(2)},
        "controller.pth": {**net.state_dict(), "controller.weight": torch.zeros(768, 4, 1, 1)},
        "channels.pth": {**net.state_dict(), "firstconv.weight": torch.zeros(48, 12, 3, 3)},
        "truncated.pth": {k: v for k, v in net.state_dict().items() if not k.startswith("denseBlocksUp.4")},
    }
    problems = {"noise.pth": "not a PyTorch state dict", "extra.pth": "unexpected key 'classifier.weight'",
                "controller.pth": r"'controller.weight' has shape \[768, 4, 1, 1\]",
                "channels.pth": "12 input channels", "truncated.pth": "up_blocks.4.layers.0.norm.weight"}
    for name, content in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            torch.save(content, path)
        with pytest.raises(ModelError, match=problems[name]) as info:
            import_authors_weights(path, tmp_path / name.replace(".pth", ""), "umcl")
        assert str(path) in str(info.value)


def test_usage_errors(dynamic_weights, tmp_path):
    _, path = dynamic_weights
    with pytest.raises(UsageError, match="unknown dataset"):
        import_authors_weights(path, tmp_path / "a", "brats")
    with pytest.raises(UsageError, match="mode moddrop has no dynamic head"):
        import_authors_weights(path, tmp_path / "a", "umcl", mode="moddrop")
    import_authors_weights(path, tmp_path / "a", "umcl")
    with pytest.raises(UsageError, match="already holds a model; pass --force"):
        import_authors_weights(path, tmp_path / "a", "umcl")
    import_authors_weights(path, tmp_path / "a", "umcl", overwrite=True, mode="moddrop+")
    assert load_model(tmp_path / "a").card.mode == "moddrop+"


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    return info.value.code, capsys.readouterr()


def test_command_line(dynamic_weights, tmp_path, capsys):
    _, path = dynamic_weights
    code, out = run_cli(["import-weights", path, tmp_path / "m", "--dataset", "umcl", "--name", "paper"],
                        capsys)
    assert code == 0, out.err
    assert "Wrote model paper (moddrop++; contrasts T1w, FLAIR, T2w, ceT1w)" in out.out
    assert load_model(tmp_path / "m").card.name == "paper"
    code, out = run_cli(["import-weights", path, tmp_path / "m", "--dataset", "umcl"], capsys)
    assert code == 64 and "--force" in out.err
    code, out = run_cli(["import-weights", path, tmp_path / "n"], capsys)
    assert code == 64 and "--dataset" in out.err
    code, out = run_cli(["import-weights", path, tmp_path / "n", "--dataset", "umcl", "--contrasts", "DWI"],
                        capsys)
    assert code == 64 and "unknown contrast 'DWI'" in out.err
    code, out = run_cli(["import-weights", tmp_path / "absent.pth", tmp_path / "n", "--dataset", "isbi"],
                        capsys)
    assert code == 64 and "absent.pth" in out.err
    code, out = run_cli(["import-weights", "--help"], capsys)
    assert code == 0 and "umcl" in out.out
