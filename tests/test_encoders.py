"""The encoder registry, the bundled lite0 ImageNet weights and timm models with local weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hist2st_tk import encoders
from hist2st_tk.encoders import EncoderSpec, build_encoder, feature_key, get_encoder_spec, register_encoder


def _imagenet_input(image: np.ndarray) -> torch.Tensor:
    from PIL import Image

    resized = np.asarray(Image.fromarray(image).resize((224, 224), Image.BILINEAR), dtype=np.float32)
    return (torch.from_numpy(resized.copy()).permute(2, 0, 1)[None] / 255 - 0.5) / 0.5


def _lite0_classifier():
    import timm

    from hist2st_tk.encoders._lite0 import bundled_checkpoint, rename_checkpoint
    from hist2st_tk.encoders._timm import load_strict, read_checkpoint

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = rename_checkpoint(read_checkpoint(bundled_checkpoint()), [len(s) for s in model.blocks])
    load_strict(model, state, source="bundled")
    return model.eval()


def test_registry_lists_builtins():
    assert {"lite0", "autoencoder", "handcrafted", "fft"} <= set(encoders.available_encoders())
    spec = get_encoder_spec("lite0")
    assert (spec.input_px, spec.mean, spec.std, spec.out_dim) == (224, (0.5,) * 3, (0.5,) * 3, 1280)
    assert spec.describe()["weights"].startswith("ImageNet")


def test_unknown_encoder_lists_registered():
    with pytest.raises(ValueError, match=r"Unknown encoder 'resnet'.*'lite0'.*timm:"):
        get_encoder_spec("resnet")


def test_lite0_recognises_imagenet_classes():
    """The bundled weights are really loaded: a cat photo is a cat, a coffee cup is espresso."""
    import skimage.data

    model = _lite0_classifier()
    with torch.inference_mode():
        cat = model(_imagenet_input(skimage.data.chelsea())).argmax().item()
        coffee = model(_imagenet_input(skimage.data.coffee())).argmax().item()
    assert 281 <= cat <= 285  # tabby, tiger, Persian, Siamese or Egyptian cat
    assert coffee == 967  # espresso


def test_lite0_features_are_pretrained_not_random():
    import skimage.data
    import timm

    module, _ = build_encoder("lite0")
    random = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0).eval()
    x = _imagenet_input(skimage.data.chelsea())
    with torch.inference_mode():
        features, baseline = module(x), random(x)
    assert features.shape == (1, 1280)
    assert not torch.allclose(features, baseline, atol=1e-3)


def test_lite0_weights_that_do_not_fit_name_the_keys(tmp_path):
    from hist2st_tk.encoders._lite0 import bundled_checkpoint

    state = torch.load(bundled_checkpoint(), weights_only=True)
    del state["_conv_head.weight"]
    state["_extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(
        ValueError, match=r"missing \(1\): \['conv_head.weight'\]; unexpected \(1\): \['_extra.weight'\]"
    ):
        build_encoder("lite0", weights=path)


def test_timm_model_from_local_weights(tmp_path):
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("resnet18", pretrained=False, num_classes=1000)
    path = tmp_path / "resnet18.safetensors"
    save_file(source.state_dict(), str(path))  # the classifier head is dropped on load
    module, spec = build_encoder("timm:resnet18", weights=path)
    x = torch.rand(2, 3, spec.input_px, spec.input_px)
    with torch.inference_mode():
        assert module(x).shape == (2, 512)
    assert torch.equal(module.conv1.weight, source.conv1.weight)
    assert feature_key("timm:resnet18") == "X_resnet18"
    assert feature_key("timm:hf-hub:org/UNI") == "X_hf_hub_org_UNI"


def test_timm_weights_of_another_architecture(tmp_path):
    import timm
    from safetensors.torch import save_file

    path = tmp_path / "resnet34.safetensors"
    save_file(timm.create_model("resnet34", pretrained=False).state_dict(), str(path))
    with pytest.raises(ValueError, match=r"do not fit the architecture.*unexpected.*layer1\.2"):
        build_encoder("timm:resnet18", weights=path)


def test_timm_needs_weights_and_a_real_model(tmp_path):
    with pytest.raises(ValueError, match="needs `weights=`"):
        build_encoder("timm:resnet18")
    with pytest.raises(ValueError, match="timm has no model named 'resnet_nope'"):
        build_encoder("timm:resnet_nope", weights=tmp_path / "x.pth")
    with pytest.raises(FileNotFoundError, match="weights file does not exist"):
        build_encoder("timm:resnet18", weights=tmp_path / "missing.pth")
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(b"\x10\x00\x00\x00")
    with pytest.raises(ValueError, match="Cannot read encoder weights"):
        build_encoder("timm:resnet18", weights=truncated)


def test_autoencoder_needs_its_directory():
    with pytest.raises(ValueError, match="needs `weights=`.*fit_autoencoder"):
        build_encoder("autoencoder")


def test_register_encoder_checks_names():
    spec = get_encoder_spec("fft")
    with pytest.raises(ValueError, match="already registered"):
        register_encoder(spec)
    bad = EncoderSpec(
        name="my-encoder",
        input_px=8,
        mean=(0, 0, 0),
        std=(1, 1, 1),
        out_dim=3,
        licence="",
        weights="",
        build=None,
    )
    with pytest.raises(ValueError, match="letters, digits and '_'"):
        register_encoder(bad)
