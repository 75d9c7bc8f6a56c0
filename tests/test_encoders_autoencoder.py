"""The HistoSPACE autoencoder: shapes, training, reproducibility, model files and their errors."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from hist2st_tk.encoders._autoencoder import AutoencoderEncoder, ConvAutoencoder, train_autoencoder
from hist2st_tk.encoders._autoencoder_files import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_autoencoder,
    save_autoencoder,
)

PX = 32


def structured_tiles(n: int = 50, px: int = PX, seed: int = 0) -> torch.Tensor:
    """Stripes and blobs of random colour, orientation and position: learnable structure, in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:px, 0:px] / px
    tiles = np.empty((n, 3, px, px), dtype=np.float32)
    for i in range(n):
        if i % 2:
            angle, freq = rng.uniform(0, np.pi), rng.uniform(2, 5)
            mask = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)))
        else:
            cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.3)
            mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2).astype(np.float32)
        fg, bg = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        tiles[i] = fg[:, None, None] * mask + bg[:, None, None] * (1 - mask)
    return torch.from_numpy(tiles)


def batches_of(tiles: torch.Tensor, size: int = 10) -> list[torch.Tensor]:
    return list(tiles.split(size))


@pytest.fixture(scope="module")
def trained() -> tuple[ConvAutoencoder, dict]:
    torch.manual_seed(0)
    model = ConvAutoencoder()
    history = train_autoencoder(model, batches_of(structured_tiles(20)), epochs=1, progress=False)
    return model, history


# ------------------------------------------------------------------------------------------ shapes


def test_shapes_and_output_range():
    model = ConvAutoencoder().eval()
    x = torch.rand(4, 3, PX, 64)
    with torch.no_grad():
        assert model.encode(x).shape == (4, 128, PX // 8, 64 // 8)
        out = model(x)
    assert out.shape == x.shape
    assert out.min() >= 0 and out.max() <= 1


def test_custom_channels():
    model = ConvAutoencoder(channels=(8, 16), in_channels=1).eval()
    assert model.multiple == 4
    with torch.no_grad():
        assert model.encode(torch.rand(2, 1, 12, 12)).shape == (2, 16, 3, 3)
        assert model(torch.rand(2, 1, 12, 12)).shape == (2, 1, 12, 12)


def test_encoder_features(trained):
    model, _ = trained
    encoder = AutoencoderEncoder(model)
    assert not encoder.training and encoder.input_px == PX and encoder.out_dim == 128
    x = torch.rand(5, 3, PX, PX)
    with torch.no_grad():
        features = encoder(x)
        fmap = encoder.feature_map(x)
        assert torch.allclose(fmap, model.encode(x))
    assert features.shape == (5, 128)
    assert fmap.shape == (5, 128, PX // 8, PX // 8)
    assert torch.allclose(features, fmap.mean(dim=(-2, -1)))

    both = AutoencoderEncoder(model, pooling="mean+max")
    with torch.no_grad():
        assert both(x).shape == (5, both.out_dim) == (5, 256)


def test_encoder_is_frozen_and_independent(trained):
    model, _ = trained
    encoder = AutoencoderEncoder(model).train()
    assert encoder.training and not encoder.encoder.training  # batch-norm statistics stay fixed
    assert not any(p.requires_grad for p in encoder.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert not model.training


def test_encoder_needs_a_tile_size():
    with pytest.raises(ValueError, match="pass `input_px=`"):
        AutoencoderEncoder(ConvAutoencoder())
    assert AutoencoderEncoder(ConvAutoencoder(), input_px=64).input_px == 64
    with pytest.raises(ValueError, match="'mean' or 'mean\\+max'"):
        AutoencoderEncoder(ConvAutoencoder(), input_px=64, pooling="max")


def test_bad_tiles():
    model = ConvAutoencoder()
    with pytest.raises(ValueError, match="30 x 32 px is not a multiple of 8.*24 x 32"):
        model(torch.rand(1, 3, 30, 32))
    with pytest.raises(ValueError, match="3-channel tiles, got 4 channels"):
        model.encode(torch.rand(1, 4, PX, PX))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\), got \(3, 32, 32\)"):
        model(torch.rand(3, PX, PX))
    with pytest.raises(TypeError, match="divide uint8 tiles by 255"):
        model(torch.zeros(1, 3, PX, PX, dtype=torch.uint8))
    encoder = AutoencoderEncoder(model, input_px=PX)
    with pytest.raises(ValueError, match="not a multiple of 8"):
        encoder(torch.rand(1, 3, 20, 20))
    with pytest.raises(ValueError, match="`channels` must be"):
        ConvAutoencoder(channels=())


# ---------------------------------------------------------------------------------------- training


def test_training_reduces_loss():
    torch.manual_seed(0)
    model = ConvAutoencoder()
    tiles = structured_tiles(50)
    history = train_autoencoder(
        model, batches_of(tiles), epochs=5, lr=3e-3, progress=True, val_batches=[(tiles[:10], None)]
    )
    assert history["epochs"] == 5 and history["seconds"] > 0
    assert len(history["train_loss"]) == len(history["val_loss"]) == 5
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert not model.training and model.input_px == PX


def test_same_seed_same_weights():
    torch.manual_seed(1)
    first = ConvAutoencoder()
    second = copy.deepcopy(first)
    data = batches_of(structured_tiles(20))
    state_before = torch.get_rng_state()
    h1 = train_autoencoder(first, data, epochs=2, seed=7, progress=False)
    assert torch.equal(torch.get_rng_state(), state_before)  # the caller's random state is untouched
    h2 = train_autoencoder(second, data, epochs=2, seed=7, progress=False)
    assert h1["train_loss"] == h2["train_loss"]
    for (key, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), key
    assert not torch.are_deterministic_algorithms_enabled()  # the global flag is restored


def test_dataloader_with_shuffle_is_reproducible():
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(structured_tiles(20)), batch_size=8, shuffle=True)
    torch.manual_seed(2)
    first = ConvAutoencoder(channels=(4, 8, 8))
    second = copy.deepcopy(first)
    h1 = train_autoencoder(first, loader, epochs=2, seed=3, progress=False)
    h2 = train_autoencoder(second, loader, epochs=2, seed=3, progress=False)
    assert h1["train_loss"] == h2["train_loss"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"epochs": 0}, ValueError, "`epochs` must be at least 1"),
        ({"epochs": 1.5}, TypeError, "`epochs` must be an integer"),
        ({"epochs": 1, "lr": 0}, ValueError, "`lr` must be a positive number"),
        ({"epochs": 1, "lr": float("nan")}, ValueError, "`lr` must be a positive number"),
        ({"epochs": 1, "weight_decay": -1}, ValueError, "`weight_decay` must be a number >= 0"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        train_autoencoder(ConvAutoencoder(), [torch.rand(2, 3, PX, PX)], progress=False, **kwargs)


def test_bad_batches():
    model = ConvAutoencoder()
    with pytest.raises(ValueError, match="`batches` yielded no tiles"):
        train_autoencoder(model, [], epochs=1, progress=False)
    with pytest.raises(ValueError, match="`val_batches` yielded no tiles"):
        train_autoencoder(model, [torch.rand(2, 3, PX, PX)], epochs=1, progress=False, val_batches=[])
    with pytest.raises(TypeError, match="one-shot iterator"):
        train_autoencoder(model, (b for b in [torch.rand(2, 3, PX, PX)]), epochs=2, progress=False)
    with pytest.raises(ValueError, match=r"values in \[0, 1\].*divide uint8 tiles by 255"):
        train_autoencoder(model, [torch.rand(2, 3, PX, PX) * 255], epochs=1, progress=False)
    with pytest.raises(ValueError, match="one square size"):
        train_autoencoder(
            model, [torch.rand(2, 3, PX, PX), torch.rand(2, 3, 16, 16)], epochs=1, progress=False
        )
    with pytest.raises(TypeError, match="must be a tensor"):
        train_autoencoder(model, [np.zeros((2, 3, PX, PX))], epochs=1, progress=False)


def test_nan_loss_suggests_a_lower_learning_rate():
    tiles = torch.rand(2, 3, PX, PX)
    tiles[0, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"lower the learning rate \(now lr=0.001\)"):
        train_autoencoder(ConvAutoencoder(), [tiles], epochs=1, progress=False)


class _NanInEpoch:
    """Two batches per epoch; the second one holds a NaN from epoch ``bad_epoch`` on."""

    def __init__(self, bad_epoch: int):
        self.bad_epoch, self.epoch = bad_epoch, 0

    def __len__(self) -> int:
        return 2

    def __iter__(self):
        self.epoch += 1
        tiles = structured_tiles(4)
        yield tiles
        if self.epoch >= self.bad_epoch:
            tiles = tiles.clone()
            tiles[0, 0, 0, 0] = float("nan")
        yield tiles


def test_nan_loss_names_its_epoch_and_batch():
    with pytest.raises(FloatingPointError, match=r"at epoch 2, batch 2 of `batches`"):
        train_autoencoder(ConvAutoencoder(channels=(4, 8, 8)), _NanInEpoch(2), epochs=3, progress=False)


def test_validation_tiles_must_have_the_training_size():
    with pytest.raises(ValueError, match=r"`val_batches` holds tiles of 16 x 16 px .*\(32 x 32 px\)"):
        train_autoencoder(
            ConvAutoencoder(),
            [structured_tiles(4)],
            epochs=1,
            progress=False,
            val_batches=[structured_tiles(4, px=16)],
        )


def test_caller_numpy_and_python_random_states_are_restored():
    import random

    np.random.seed(11)
    random.seed(11)
    numpy_state, python_state = np.random.get_state()[1].copy(), random.getstate()
    train_autoencoder(ConvAutoencoder(channels=(4, 8, 8)), [structured_tiles(4)], epochs=1, progress=False)
    assert np.array_equal(np.random.get_state()[1], numpy_state) and random.getstate() == python_state


# ------------------------------------------------------------------------------------------- files


def test_save_load_roundtrip(trained, tmp_path):
    model, history = trained
    metadata = {
        "patch_um": 112,
        "mpp": np.float64(0.69),
        "trained_on": ["B4"],
        "final_loss": history["train_loss"][-1],
    }
    path = save_autoencoder(model, tmp_path / "ae", metadata=metadata)
    assert sorted(p.name for p in path.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    assert [p.name for p in tmp_path.iterdir()] == ["ae"]  # no staging directory left behind

    loaded, config = load_autoencoder(path)
    assert not loaded.training and loaded.input_px == PX
    assert config["input_px"] == PX and config["architecture"] == {
        "channels": [32, 64, 128],
        "in_channels": 3,
    }
    assert config["metadata"]["mpp"] == pytest.approx(0.69) and config["metadata"]["trained_on"] == ["B4"]
    assert config["format_version"] == 1 and config["package_version"]

    x = torch.rand(3, 3, PX, PX)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        assert torch.equal(AutoencoderEncoder(loaded)(x), AutoencoderEncoder(model)(x))


def test_builtin_registry_builds_it(trained, tmp_path):
    from hist2st_tk.encoders import build_encoder

    path = save_autoencoder(trained[0], tmp_path / "ae", metadata={})
    module, spec = build_encoder("autoencoder", weights=path)
    assert isinstance(module, AutoencoderEncoder) and module.out_dim == spec.out_dim == 128


def test_save_refusals(trained, tmp_path):
    model, _ = trained
    path = save_autoencoder(model, tmp_path / "ae", metadata={"epochs": 1})
    with pytest.raises(FileExistsError, match="not empty; pass `overwrite=True`"):
        save_autoencoder(model, path, metadata={"epochs": 2})
    assert load_autoencoder(path)[1]["metadata"] == {"epochs": 1}
    save_autoencoder(model, path, metadata={"epochs": 2}, overwrite=True)
    assert load_autoencoder(path)[1]["metadata"] == {"epochs": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["ae"]

    (tmp_path / "empty").mkdir()
    save_autoencoder(model, tmp_path / "empty", metadata={})  # an empty directory is filled
    with pytest.raises(ValueError, match="no training tile size"):
        save_autoencoder(ConvAutoencoder(), tmp_path / "untrained", metadata={})
    with pytest.raises(ValueError, match="JSON values"):
        save_autoencoder(model, tmp_path / "bad", metadata={"when": object()})
    with pytest.raises(TypeError, match="`metadata` must be a dict"):
        save_autoencoder(model, tmp_path / "bad", metadata=[1])
    assert not (tmp_path / "untrained").exists() and not (tmp_path / "bad").exists()


@pytest.fixture
def saved(trained, tmp_path):
    return save_autoencoder(trained[0], tmp_path / "ae", metadata={})


def test_load_missing_files(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match="No autoencoder directory"):
        load_autoencoder(tmp_path / "nowhere")
    (saved / WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks \['weights.safetensors'\]"):
        load_autoencoder(saved)


def test_load_wrong_keys(saved):
    from safetensors.torch import load_file, save_file

    state = load_file(str(saved / WEIGHTS_FILE))
    state["encoder.0.0.kernel"] = state.pop("encoder.0.0.weight")
    state["decoder.0.1.weight"] = torch.zeros(64, 128, 5, 5)
    save_file(state, str(saved / WEIGHTS_FILE))
    with pytest.raises(
        ValueError,
        match=r"missing \(1\): \['encoder.0.0.weight'\].*unexpected \(1\): \['encoder.0.0.kernel'\].*wrong shape \(1\): \['decoder.0.1.weight \(64, 128, 5, 5\)",
    ):
        load_autoencoder(saved)


def test_load_architecture_mismatch(saved):
    config = json.loads((saved / CONFIG_FILE).read_text())
    config["architecture"]["channels"] = [16, 32, 64]
    (saved / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="do not fit the architecture.*wrong shape"):
        load_autoencoder(saved)


def test_load_truncated_weights(saved):
    data = (saved / WEIGHTS_FILE).read_bytes()
    (saved / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        load_autoencoder(saved)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: c.update(format="hist2st_tk.predictor"), "not a hist2st_tk autoencoder"),
        (lambda c: c.update(format_version=99), "newer hist2st_tk.*upgrade"),
        (lambda c: c.update(format_version="1"), "invalid format_version"),
        (lambda c: c.pop("architecture"), "lacks the architecture"),
        (lambda c: c.update(input_px=None), "integer `input_px`"),
        (lambda c: c["architecture"].update(channels=[0]), "invalid architecture"),
    ],
)
def test_load_bad_config(saved, edit, match):
    config = json.loads((saved / CONFIG_FILE).read_text())
    edit(config)
    (saved / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=match):
        load_autoencoder(saved)


def test_load_config_not_json(saved):
    (saved / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_autoencoder(saved)
