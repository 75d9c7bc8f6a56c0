"""The networks of hist2st_tk.nn (top-level classes, weights named as saved models name them), the
Lightning training plan, and ST-Net on the shared TorchPredictor life cycle."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hist2st_tk import nn as networks

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_FEATURES, N_GENES = 8, 3


def _tiny_backbone():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())


def _block(n: int = 5):
    """A path graph of ``n`` spots as a graph network's input (every spot a core spot)."""
    edges = torch.tensor([[i, i + 1] for i in range(n - 1)] + [[i + 1, i] for i in range(n - 1)]).T
    return {
        "x": torch.randn(n, N_FEATURES),
        "edge_index": edges,
        "edge_weight": torch.ones(edges.shape[1]),
        "n_core": torch.tensor(n),
    }


#: network, a small instance, an input, the keys of its outputs, and the keys of its weights exactly as
#: the models saved before the networks moved to hist2st_tk.nn name them (weights files must still load)
CASES = {
    "histospace": (
        lambda: networks.HistoSpaceNet(N_FEATURES, N_GENES, map_channels=None, hidden=4, dropout=0.1),
        lambda: torch.randn(5, N_FEATURES),
        {"expression"},
        ["head.1.bias", "head.1.weight", "head.4.bias", "head.4.weight"],
    ),
    "histospace_map": (
        lambda: networks.HistoSpaceNet(N_FEATURES, N_GENES, map_channels=2, hidden=4, dropout=0.1),
        lambda: torch.randn(5, N_FEATURES),
        {"expression"},
        [
            "block.0.bias", "block.0.weight", "block.1.bias", "block.1.num_batches_tracked",
            "block.1.running_mean", "block.1.running_var", "block.1.weight",
            "head.1.bias", "head.1.weight", "head.4.bias", "head.4.weight",
        ],
    ),
    "hist_multiscale": (
        lambda: networks.MultiScaleNet(N_FEATURES, N_GENES, n_scales=2, hidden=4, dropout=0.1),
        lambda: torch.randn(5, N_FEATURES),
        {"expression", "tumor", "scale_weights"},
        [
            "adapter.0.bias", "adapter.0.weight", "attention.bias", "attention.weight", "expression.bias",
            "expression.weight", "scale_embedding", "tumor.bias", "tumor.weight",
        ],
    ),
    "hespotex": (
        lambda: networks.HESpotExNet(N_FEATURES, N_GENES, hidden=4, latent=2, heads=2, dropout=0.1),
        _block,
        {"expression", "reconstruction", "features"},
        [
            "decoder.bias", "decoder.lin.weight", "encoder1.att_dst", "encoder1.att_src", "encoder1.bias",
            "encoder1.lin.weight", "encoder2.att_dst", "encoder2.att_src", "encoder2.bias",
            "encoder2.lin.weight", "expression.bias", "expression.weight", "image.0.bias", "image.0.weight",
            "image.3.bias", "image.3.weight", "reconstruct1.att_dst", "reconstruct1.att_src",
            "reconstruct1.bias", "reconstruct1.lin.weight", "reconstruct2.bias", "reconstruct2.weight",
        ],
    ),
    "hist2st": (
        lambda: networks.Hist2STNet(N_FEATURES, N_GENES, hidden=4, heads=2, layers=1, dropout=0.1),
        _block,
        {"expression", "log_rate", "log_theta", "pi_logit"},
        [
            "adapter.0.bias", "adapter.0.weight", "expression.bias", "expression.weight", "sage.lin_l.bias",
            "sage.lin_l.weight", "sage.lin_r.weight",
            *(
                f"transformer.layers.0.{name}"
                for name in (
                    "linear1.bias", "linear1.weight", "linear2.bias", "linear2.weight", "norm1.bias",
                    "norm1.weight", "norm2.bias", "norm2.weight", "self_attn.in_proj_bias",
                    "self_attn.in_proj_weight", "self_attn.out_proj.bias", "self_attn.out_proj.weight",
                )
            ),
            "zinb.bias", "zinb.weight",
        ],
    ),
    "image2gene": (
        lambda: networks.Image2GeneNet(N_FEATURES, hidden=4, dim=3, n_bins=4, use_coords=True, dropout=0.1),
        lambda: {"x": torch.randn(5, N_FEATURES), "bins": torch.randint(0, 6, (5, 2))},
        {"embedding"},
        [
            "encoder.0.bias", "encoder.0.weight", "encoder.3.bias", "encoder.3.weight", "encoder.5.bias",
            "encoder.5.weight", "position.0.weight", "position.1.weight",
        ],
    ),
    "deeponet": (
        lambda: networks.DeepONet(
            N_FEATURES, N_GENES, hidden=4, basis=3, gene_dim=2, position_dim=2, n_classes=2, dropout=0.1
        ),
        lambda: {"x": torch.randn(5, N_FEATURES), "position": torch.randn(5, 2)},
        {"expression", "logits"},
        [
            "bias", "branch.0.bias", "branch.0.weight", "branch.3.bias", "branch.3.weight", "classifier.bias",
            "classifier.weight", "coefficients.bias", "coefficients.weight", "genes.weight", "trunk.0.bias",
            "trunk.0.weight", "trunk.3.bias", "trunk.3.weight",
        ],
    ),
    "stnet": (
        lambda: networks.STNet(_tiny_backbone(), N_GENES, mean=(0.5,) * 3, std=(0.5,) * 3, input_px=8),
        lambda: torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8),
        {"expression"},
        ["backbone.0.bias", "backbone.0.weight", "head.bias", "head.weight", "mean", "std"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_network_weights_keep_their_saved_names(name):
    build, inputs, outputs, keys = CASES[name]
    torch.manual_seed(0)
    module = build().eval()
    assert sorted(module.state_dict()) == sorted(keys)
    with torch.no_grad():
        result = module(inputs())
    assert set(result) == outputs
    assert result.get("expression", result.get("embedding")).shape[0] == 5


def test_networks_are_documented_top_level_classes():
    for name in networks.__all__:
        cls = getattr(networks, name)
        assert inspect.isclass(cls) and issubclass(cls, torch.nn.Module), name
        assert "." not in cls.__qualname__, f"{name} is defined inside a function"
        doc = inspect.getdoc(cls)
        for section in ("Parameters", "Inputs", "Outputs"):
            assert f"\n{section}\n" in doc, f"{name} documents no {section}"


def test_networks_refuse_impossible_sizes():
    with pytest.raises(ValueError, match="not a square map of 3 channels"):
        networks.HistoSpaceNet(8, 2, map_channels=3, hidden=4, dropout=0.0)
    with pytest.raises(ValueError, match="cannot be split into 3 equal scales"):
        networks.MultiScaleNet(8, 2, n_scales=3, hidden=4, dropout=0.0)
    with pytest.raises(ValueError, match="must be a multiple of `heads=3`"):
        networks.Hist2STNet(8, 2, hidden=4, heads=3, layers=1, dropout=0.0)
    with pytest.raises(ValueError, match="must be a multiple of `heads=3`"):
        networks.HESpotExNet(8, 2, hidden=4, latent=2, heads=3, dropout=0.0)


def test_training_plan_is_a_lightning_module_with_its_optimiser():
    import lightning as L

    from hist2st_tk.nn._training import TrainingPlan

    module = torch.nn.Linear(2, 1)
    plan = TrainingPlan(module, lambda outputs, batch: outputs.sum(), lr=0.1, weight_decay=0.01)
    assert isinstance(plan, L.LightningModule) and plan.module is module
    assert type(plan.configure_optimizers()) is torch.optim.AdamW
    adam = TrainingPlan(module, None, lr=0.1, weight_decay=0.0, optimizer="adam").configure_optimizers()
    assert type(adam) is torch.optim.Adam
    with pytest.raises(ValueError, match="`optimizer` must be one of"):
        TrainingPlan(module, None, lr=0.1, weight_decay=0.0, optimizer="sgd")


def test_train_scores_without_early_stopping_and_restores_torch_flags():
    """`early_stopping=False`: every epoch runs and the validation data is only scored."""
    from hist2st_tk.nn._training import TrainingConfig, train

    x = torch.randn(32, 2)
    data = (x, x.sum(dim=1, keepdim=True))

    def loss(outputs, batch):
        return torch.nn.functional.mse_loss(outputs, batch[1])

    config = TrainingConfig(max_epochs=4, batch_size=8, lr=0.5, patience=1, early_stopping=False)
    assert not torch.are_deterministic_algorithms_enabled()
    history = train(torch.nn.Linear(2, 1), loss, data, data, config)
    assert len(history["train_loss"]) == len(history["val_loss"]) == 4
    assert history["train_loss"][-1] < history["train_loss"][0]
    # Lightning's deterministic=True is for the run only: the caller's flags are handed back
    assert not torch.are_deterministic_algorithms_enabled()


def test_stnet_shares_the_torch_predictor_life_cycle():
    from hist2st_tk.models import STNetPredictor, TorchPredictor

    assert issubclass(STNetPredictor, TorchPredictor)
    for method in ("_fit", "_tensors", "_load_tensors", "save", "load"):  # not copied any more
        assert method not in vars(STNetPredictor), method
    model = STNetPredictor(weights=Path("w"))
    model._stats = {"y_mean": np.zeros(2, np.float32), "y_std": np.ones(2, np.float32)}
    model.genes = pd.Index(["a", "b"])  # fitted enough for config()
    config = model.config()
    assert "n_features" not in config  # the patches are not a feature matrix
    assert config["hparams"]["weights"] == "w" and "progress" not in config["hparams"]
