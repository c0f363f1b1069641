import pytest
import torch

from colorvid.errors import ModelFileError
from colorvid.models import load_model
from colorvid.models.effnet_unet import Colorizer, ModelConfig, inference_size, save_model


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    model = Colorizer(ModelConfig(ab_bins=8, readout="annealed-mean"), torch.randn(8, 2) * 40)
    # make batch norm statistics non-trivial, so fusing them is really checked
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert module.running_mean is not None and module.running_var is not None  # track_running_stats
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("m") / "m.safetensors"
    save_model(model, path, half=False)
    return path


def test_fused_and_frozen_models_give_the_same_colors(model_file):
    plain = load_model(model_file, fuse=False)
    fused = load_model(model_file)
    frozen = load_model(model_file, optimize=True)
    x = (torch.rand(2, 1, 64, 96) * 100).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        reference = plain(x)
        assert reference.shape == (2, 2, 16, 24)
        assert torch.allclose(fused(x), reference, atol=1e-3)
        assert torch.allclose(frozen(x), reference, atol=1e-3)
        # the frozen graph takes other sizes than the one it was traced with
        y = (torch.rand(1, 1, 32, 160) * 100).contiguous(memory_format=torch.channels_last)
        assert torch.allclose(frozen(y), plain(y), atol=1e-3)


def test_frozen_model_runs_a_batch_in_slices_with_the_same_colors(model_file, monkeypatch):
    from colorvid.models import effnet_unet

    frozen = load_model(model_file, optimize=True)
    x = (torch.rand(5, 1, 64, 96) * 100).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        whole = frozen(x)
        monkeypatch.setattr(effnet_unet, "CPU_PIXELS_PER_CALL", 2 * 64 * 96)  # slices of 2, 2 and 1 frames
        assert torch.allclose(frozen(x), whole, atol=1e-5)


def test_half_precision_file_round_trips(model_file, tmp_path):
    model = load_model(model_file, fuse=False)
    assert isinstance(model, Colorizer)  # the family's own network, not an optimized form
    half_path = tmp_path / "half.safetensors"
    save_model(model, half_path, half=True)
    assert half_path.stat().st_size < model_file.stat().st_size * 0.6
    again = load_model(half_path, fuse=False)
    x = torch.rand(1, 1, 64, 64) * 100
    with torch.inference_mode():
        assert (again(x) - model(x)).abs().max() < 1.0  # ab units


def test_a_file_that_is_not_a_model_is_refused(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"hello")
    with pytest.raises(ModelFileError):
        load_model(bad)


@pytest.mark.parametrize(
    "height,width,expected",
    [(480, 854, (256, 448)), (1080, 1920, (256, 448)), (49, 65, (256, 352)), (720, 406, (448, 256))],
)
def test_inference_size_keeps_aspect_with_sides_multiple_of_32(height, width, expected):
    assert inference_size(height, width, 256) == expected


def colorizer(path) -> Colorizer:
    """The file's network as loaded for inference (fused, not frozen)."""
    model = load_model(path)
    assert isinstance(model, Colorizer)
    return model


def test_fitting_the_readout_changes_only_the_readout_and_the_same_way_each_time(tmp_path):
    from colorvid.models.effnet_unet import FIT_GAIN_RANGE, fit_readout

    torch.manual_seed(1)
    model_file = tmp_path / "regression.safetensors"
    save_model(Colorizer(ModelConfig(confidence_head=True)), model_file, half=False)
    keyframes = [torch.rand(3, 48, 80), (torch.rand(3, 70, 40) * 255).to(torch.uint8)]  # any sizes, float or uint8
    before = colorizer(model_file).state_dict()
    fitted = [colorizer(model_file) for _ in range(2)]
    gains = [fit_readout(model, keyframes) for model in fitted]
    # the same pixels and steps each time; float sums may still differ in their last bits
    assert gains[0] == pytest.approx(gains[1], rel=1e-4) and FIT_GAIN_RANGE[0] <= gains[0] <= FIT_GAIN_RANGE[1]
    changed = {name for name, value in fitted[0].state_dict().items() if not torch.equal(value, before[name])}
    assert changed and all(name.startswith(("regress.", "confidence.")) for name in changed), changed
    for name, value in fitted[0].state_dict().items():
        torch.testing.assert_close(value, fitted[1].state_dict()[name], rtol=1e-4, atol=1e-5,
                                   msg=f"{name} differs between two fits")
    assert not any(p.requires_grad and p.grad is not None for p in fitted[0].parameters())


def test_fitting_needs_keyframes_and_a_regression_readout(model_file, tmp_path):
    from colorvid.models.effnet_unet import fit_readout

    with pytest.raises(ValueError, match="no keyframes"):
        fit_readout(colorizer(model_file), [])
    classifier = tmp_path / "classifier.safetensors"
    save_model(Colorizer(ModelConfig(ab_bins=4, readout="annealed-mean")), classifier)
    with pytest.raises(ValueError, match="classification head"):
        fit_readout(colorizer(classifier), [torch.rand(3, 32, 32)])
