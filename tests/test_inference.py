"""Predictor: 2.5D slicing, orientation fusion, the fast path against the plain definition."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bids_mdpp.errors import UsageError
from bids_mdpp import inference
from bids_mdpp.inference import (
    Predictor,
    bf16_supported,
    bounding_box,
    extract_slices,
    predict_reference,
    resolve_device,
)
from bids_mdpp.model import ModelCard, load_model, save_model
from bids_mdpp.nn import build_network, torch_threads

SHAPE = (28, 30, 26)
TINY = dict(n_contrasts=3, growth_rate=4, down_blocks=(1, 1), up_blocks=(1, 1), bottleneck_layers=1,
            first_conv_channels=8)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors run fastest on one thread (and do not fight other processes for cores)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """A tiny dynamic model (T1w, FLAIR, T2w) with weights large enough to give varied outputs."""
    torch.manual_seed(3)
    card = ModelCard(name="tiny", version="0", contrasts=("T1w", "FLAIR", "T2w"), mode="moddrop++",
                     network={**TINY, "dynamic_head": True})
    network = build_network(card.network)
    network.reset_parameters(std=0.2)
    return load_model(save_model(tmp_path_factory.mktemp("model"), network, card))


@pytest.fixture(scope="module")
def session():
    """Normalised-looking volumes (background −1) and an ellipsoidal brain mask of SHAPE."""
    rng = np.random.default_rng(0)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij")
    brain = sum((g / r) ** 2 for g, r in zip(grid, (0.6, 0.55, 0.6))) < 1
    volumes = {}
    for name in ("T1w", "FLAIR"):
        data = np.full(SHAPE, -1.0, dtype=np.float32)
        data[brain] = -0.5 + 0.2 * rng.standard_normal(brain.sum())
        volumes[name] = data
    return volumes, brain


def test_resolve_device():
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UsageError, match="invalid device 'tpu0'"):
        resolve_device("tpu0")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA GPU"):
            resolve_device("cuda")
        with pytest.raises(UsageError, match="no CUDA GPU"):
            resolve_device("cuda:1")


def test_slices_are_contrast_major_with_replicated_edges():
    stack = np.arange(2 * 4 * 3 * 2, dtype=np.float32).reshape(2, 4, 3, 2)  # (K, X, Y, Z)
    out = extract_slices(stack, axis=0, indices=[0, 2], slices_per_contrast=3)
    assert out.shape == (2, 6, 3, 2)
    np.testing.assert_array_equal(out[0, 0], stack[0, 0])  # i−1 clamped to 0
    np.testing.assert_array_equal(out[0, 1], stack[0, 0])
    np.testing.assert_array_equal(out[0, 2], stack[0, 1])
    np.testing.assert_array_equal(out[1, 3:], stack[1, 1:4])  # second contrast, slices 1, 2, 3
    last = extract_slices(stack, axis=2, indices=[1], slices_per_contrast=3)
    np.testing.assert_array_equal(last[0, 4], stack[1, :, :, 1])
    np.testing.assert_array_equal(last[0, 5], stack[1, :, :, 1])  # i+1 clamped to the last slice


def test_output_shape_range_and_determinism(loaded, session):
    volumes, brain = session
    predictor = Predictor(loaded, device="cpu", batch_size=7)
    first = predictor.predict(volumes, brain)
    assert first.shape == SHAPE and first.dtype == np.float32
    assert 0.0 <= first.min() and first.max() <= 1.0
    assert first[brain].std() > 0.01  # the tiny network does not output a constant
    assert np.all(first[~brain] == 0)
    np.testing.assert_array_equal(predictor.predict(volumes, brain), first)


def test_without_a_mask_the_predictor_is_the_plain_definition(loaded, session):
    volumes, _ = session
    predictor = Predictor(loaded, device="cpu", batch_size=16, precision="fp32")
    fused = predictor.predict(volumes)
    stack, code = predictor.stack(volumes)
    np.testing.assert_allclose(fused, predict_reference(loaded.network, stack, code), atol=1e-5)


def test_stacking_a_box_stacks_that_block_of_every_contrast(loaded, session):
    volumes, _ = session
    predictor = Predictor(loaded, device="cpu")
    whole, code = predictor.stack(volumes)
    box = (slice(2, 9), slice(0, 11), slice(5, None))
    block, block_code = predictor.stack(volumes, box)
    np.testing.assert_array_equal(block, whole[(slice(None), *box)])
    assert block_code == code and block.flags.c_contiguous


def test_the_three_orientations_are_averaged_with_equal_weights(loaded, session):
    volumes, _ = session
    predictor = Predictor(loaded, device="cpu", precision="fp32")
    stack, code = predictor.stack(volumes)
    per_axis = [predict_reference(loaded.network, stack, code, axes=[axis]) for axis in range(3)]
    assert np.abs(per_axis[0] - per_axis[2]).max() > 1e-2  # orientations disagree, so fusion matters
    np.testing.assert_allclose(predictor.predict(volumes), sum(per_axis) / 3, atol=1e-5)


def test_fast_path_matches_the_plain_path_inside_the_brain(loaded, session):
    volumes, brain = session
    plain = Predictor(loaded, device="cpu", batch_size=1, precision="fp32").predict(volumes)
    # a margin beyond the tiny network's reach: cropping, skipping and batching change nothing
    fast = Predictor(loaded, device="cpu", batch_size=8, precision="fp32", crop_margin=8)
    assert np.abs(fast.predict(volumes, brain) - plain)[brain].max() < 1e-5
    # a thin margin changes only the context near the box's faces
    thin = Predictor(loaded, device="cpu", batch_size=8, precision="fp32", crop_margin=2)
    difference = np.abs(thin.predict(volumes, brain) - plain)[brain]
    assert 1e-5 < difference.max() < 5e-2 and difference.mean() < 5e-3


def test_bf16_when_chosen_stays_close_to_fp32(loaded, session):
    volumes, brain = session
    exact = Predictor(loaded, device="cpu", precision="fp32").predict(volumes, brain)
    auto = Predictor(loaded, device="cpu", precision="auto")
    assert np.abs(auto.predict(volumes, brain) - exact).max() <= 1e-2
    assert auto.precision_used in ("bf16", "fp32")
    forced = Predictor(loaded, device="cpu", precision="bf16")
    assert np.abs(forced.predict(volumes, brain) - exact).max() < 5e-2
    assert forced.precision_used == "bf16"


def test_auto_falls_back_to_fp32_when_bf16_strays(loaded, session, monkeypatch):
    if not bf16_supported(torch.device("cpu")):
        pytest.skip("this CPU has no native bfloat16: auto always runs fp32")
    volumes, brain = session
    exact = Predictor(loaded, device="cpu", precision="fp32").predict(volumes, brain)
    monkeypatch.setattr(inference, "BF16_TOLERANCE", 0.0)
    strict = Predictor(loaded, device="cpu", precision="auto")
    np.testing.assert_array_equal(strict.predict(volumes, brain), exact)
    assert strict.precision_used == "fp32"


def test_missing_contrasts_are_zero_filled_and_unknown_ones_ignored(loaded, session):
    volumes, brain = session
    predictor = Predictor(loaded, device="cpu", precision="fp32")
    assert predictor.code_for(["FLAIR", "T1w"]) == (1, 1, 0)
    stack, code = predictor.stack({"FLAIR": volumes["FLAIR"], "PDw": volumes["T1w"]})
    assert code == (0, 1, 0)
    assert np.all(stack[0] == 0) and np.all(stack[2] == 0)
    np.testing.assert_array_equal(stack[1], volumes["FLAIR"])
    with_unknown = predictor.predict({**volumes, "PDw": volumes["T1w"]}, brain)
    np.testing.assert_array_equal(with_unknown, predictor.predict(volumes, brain))
    only_flair = predictor.predict({"FLAIR": volumes["FLAIR"]}, brain)
    assert np.abs(only_flair - with_unknown).max() > 1e-3


@pytest.mark.parametrize("change,message", [
    (lambda v, m: ({**v, "T1w": v["T1w"][:-1]}, m), r"shapes disagree: T1w \(27, 30, 26\), FLAIR \(28, 30, 26\)"),
    (lambda v, m: ({"T1w": v["T1w"][0]}, m), r"contrast T1w: expected a 3D volume"),
    (lambda v, m: ({"PDw": v["T1w"]}, m), r"none of the given contrasts \(PDw\).*T1w, FLAIR, T2w"),
    (lambda v, m: ({"FLAIR": np.where(m, np.nan, v["FLAIR"])}, m), "contrast FLAIR: .*NaN"),
    (lambda v, m: (v, m[:-1]), "brain mask's shape"),
    (lambda v, m: (v, np.zeros_like(m)), "brain mask is empty"),
    (lambda v, m: ({"T1w": v["T1w"][:3]}, None), "smaller than the network's minimum of 4"),
])
def test_bad_inputs_are_rejected_with_names(loaded, session, change, message):
    volumes, brain = change(*session)
    with pytest.raises(ValueError, match=message):
        Predictor(loaded, device="cpu").predict(volumes, brain)


@pytest.mark.parametrize("options,message", [
    ({"precision": "int8"}, "invalid precision"), ({"batch_size": 0}, "batch size"),
    ({"num_threads": 0}, "threads"),
])
def test_bad_options_are_usage_errors(loaded, options, message):
    with pytest.raises(UsageError, match=message):
        Predictor(loaded, device="cpu", **options)


def test_num_threads_applies_during_predict_only(loaded, session):
    volumes, brain = session
    predictor = Predictor(loaded, device="cpu", num_threads=2)
    seen = []
    predictor.network.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    predictor.predict(volumes, brain)
    assert set(seen) == {2} and torch.get_num_threads() == before == 1
    assert loaded.network.first_conv.conv.weight.is_contiguous()  # the loaded model is not changed


def test_bounding_box_grows_by_the_margin_on_the_pooling_grid_and_stays_inside():
    mask = np.zeros((20, 20, 20), dtype=bool)
    mask[2:5, 8:12, 15:19] = True
    assert bounding_box(mask, margin=3, grid=8) == (slice(0, 8), slice(0, 15), slice(8, 20))
    assert bounding_box(mask, margin=1, grid=2) == (slice(0, 6), slice(6, 13), slice(14, 20))


def test_each_batch_runs_on_the_brain_box_of_its_own_slices(loaded, session):
    volumes, brain = session
    predictor = Predictor(loaded, device="cpu", batch_size=2, precision="fp32", crop_margin=1)
    seen = []
    hook = predictor.network.register_forward_pre_hook(lambda _, args: seen.append(args[0].shape))
    try:
        predictor.predict(volumes, brain)
    finally:
        hook.remove()
    planes = {tuple(shape[2:]) for shape in seen}
    areas = [shape[2] * shape[3] for shape in seen]
    # slices at the ellipsoid's poles get smaller windows than those through its middle
    assert len(planes) > 3 and min(areas) < max(areas) / 2
    box = bounding_box(brain, 1, predictor.pooling_grid)
    box_sides = [s.stop - s.start for s in box]
    for shape in seen:
        for side in shape[2:]:
            assert predictor.pooling_grid <= side <= max(box_sides)


def test_a_window_starts_on_the_pooling_grid_and_ends_at_the_margin(loaded):
    predictor = Predictor(loaded, device="cpu", crop_margin=2)
    grid = predictor.pooling_grid  # 4 for the tiny network
    inside = np.zeros((3, 30, 26), dtype=bool)
    inside[1, 9:17, 6:21] = True
    rows, cols = predictor._window(inside, np.array([0, 1]), (30, 26))
    assert rows == slice(4, 19)  # 9 − 2 rounded down to the grid; 16 + 1 + 2
    assert cols == slice(4, 23)
    assert rows.start % grid == 0 and cols.start % grid == 0


def test_flip_tta_averages_with_the_mirrored_prediction(loaded, session):
    volumes, brain = session
    plain = Predictor(loaded, precision="fp32")
    tta = Predictor(loaded, precision="fp32", flip_tta=True)
    mirrored = plain.predict({k: v[::-1].copy() for k, v in volumes.items()}, brain[::-1].copy())
    expected = (plain.predict(volumes, brain) + mirrored[::-1]) / 2
    assert np.allclose(tta.predict(volumes, brain), expected, atol=1e-6)
    assert tta.settings == {"Precision": "fp32", "TestTimeAugmentation": ["left-right flip"]}
    assert plain.settings["TestTimeAugmentation"] == []


def test_flip_tta_makes_the_map_mirror_equivariant(loaded, session):
    volumes, brain = session
    flipped = {k: v[::-1].copy() for k, v in volumes.items()}
    plain = Predictor(loaded, precision="fp32")
    # random weights are not symmetric: without TTA, mirroring the input does not mirror the map
    assert not np.allclose(plain.predict(flipped, brain[::-1].copy())[::-1],
                           plain.predict(volumes, brain), atol=1e-4)
    tta = Predictor(loaded, precision="fp32", flip_tta=True)
    assert np.allclose(tta.predict(flipped, brain[::-1].copy())[::-1], tta.predict(volumes, brain),
                       atol=1e-6)


def test_the_cards_probability_calibration_is_applied_after_fusion(loaded, session):
    import dataclasses

    from bids_mdpp.model import LoadedModel
    from bids_mdpp.recalibration import apply_logistic

    volumes, brain = session
    raw = Predictor(loaded, precision="fp32").predict(volumes, brain)
    calibration = {"method": "logistic", "scale": 2.0, "bias": -0.5, "fitted_on": "test"}
    card = dataclasses.replace(loaded.card, probability_calibration=calibration)
    recalibrated = LoadedModel(**{**{f.name: getattr(loaded, f.name)
                                     for f in dataclasses.fields(loaded)}, "card": card})
    predictor = Predictor(recalibrated, precision="fp32")
    probability = predictor.predict(volumes, brain)
    assert np.allclose(probability, apply_logistic(raw, 2.0, -0.5), atol=1e-6)
    assert not np.allclose(probability[brain], raw[brain], atol=1e-3)
    assert np.all(probability[~brain] == 0)  # outside the brain stays 0
    assert predictor.settings["ProbabilityCalibration"] == {"Method": "logistic", "Scale": 2.0,
                                                            "Bias": -0.5}
    # what a recalibration is fitted on: the network's own probabilities
    unchanged = Predictor(recalibrated, precision="fp32", recalibrate=False)
    assert np.allclose(unchanged.predict(volumes, brain), raw, atol=1e-6)
    assert "ProbabilityCalibration" not in unchanged.settings


def test_inputs_with_the_anchor_contrast_run_through_the_anchor_weights(loaded, session, tmp_path):
    """A model with anchor weights segments an input that includes the anchor contrast exactly
    as the anchor network does, and every other input with its own weights."""
    volumes, brain = session
    torch.manual_seed(4)
    other = build_network(loaded.card.network)
    other.reset_parameters(std=0.2)
    anchored = load_model(save_model(tmp_path / "anchored", other, loaded.card,
                                     anchor=("FLAIR", loaded.network)))
    plain, other_alone = Predictor(loaded, precision="fp32"), Predictor(anchored, precision="fp32")
    assert other_alone.network_for(["T1w", "FLAIR"]) is other_alone.anchor_network
    with_flair = other_alone.predict(volumes, brain)
    assert np.array_equal(with_flair, plain.predict(volumes, brain))
    t1w = {"T1w": volumes["T1w"]}
    assert not np.allclose(other_alone.predict(t1w, brain), plain.predict(t1w, brain), atol=1e-3)
    reference = Predictor(load_model(save_model(tmp_path / "other", other, loaded.card)),
                          precision="fp32")
    assert np.array_equal(other_alone.predict(t1w, brain), reference.predict(t1w, brain))
