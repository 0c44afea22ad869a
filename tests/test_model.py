"""The network: sizes, parameter counts, official checkpoints of both layouts, refusals."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from conftest import needs_torch, official_layout, random_official_state

pytestmark = needs_torch


def reference_forward(state: dict, x, variant: str, ratio: float | None = None):
    """LLPackNet written directly from the published description, with the official keys.

    Independent of toolkit.model.llpacknet: planes by slicing, space-to-depth by reshape, UnPack by the
    index formula, the histogram by numpy, weight norm computed here.
    """
    import torch
    import torch.nn.functional as F

    def w(name):
        if variant == "llpacknet-2022":
            g, v = state[name + ".weight_g"], state[name + ".weight_v"]
            return g * v / v.reshape(v.shape[0], -1).norm(dim=1).reshape(-1, 1, 1, 1)
        return state[name + ".weight"]

    sep = ".0" if variant == "llpacknet-2022" else ""

    def conv(name, t, pad):
        return F.conv2d(t, w(name + sep), state.get(name + sep + ".bias"), padding=pad)

    def rdb(prefix, t):
        feats = t
        for k in range(6):
            feats = torch.cat([feats, F.relu(conv(f"{prefix}.dense_layers.{k}.conv", feats, 1))], 1)
        return t + conv(f"{prefix}.conv_1x1", feats, 0)

    n, _, height, width = x.shape
    if variant == "llpacknet-bmvc2020":
        edges = (2 ** np.linspace(0, 8, 64) - 1) / 255
        hists = [np.histogram(x[i].numpy(), bins=edges)[0] / x[i].numel() for i in range(n)]
        hist = torch.tensor(np.stack(hists), dtype=torch.float32)
        h1 = F.linear(hist, state["amplifier.conv_post.0.weight"], state["amplifier.conv_post.0.bias"])
        gamma = F.linear(h1, state["amplifier.conv_post.1.weight"], state["amplifier.conv_post.1.bias"])
        gamma = torch.where(gamma <= 0, torch.full_like(gamma, 1e-4), gamma)
    else:
        gamma = torch.full((n, 1), 1.0)

    def space_to_depth8(p):
        h, wd = p.shape[1] // 8, p.shape[2] // 8  # p is [N, H/2, W/2]
        return p.reshape(n, h, 8, wd, 8).permute(0, 2, 4, 1, 3).reshape(n, 64, h, wd)

    planes = {"RDBr": x[:, 0, 0::2, 0::2], "RDBg1": x[:, 0, 0::2, 1::2], "RDBg2": x[:, 0, 1::2, 0::2], "RDBb": x[:, 0, 1::2, 1::2]}
    outs = [F.relu(conv(name, space_to_depth8(p) * gamma.reshape(n, 1, 1, 1), 1)) for name, p in planes.items()]
    f0 = F.conv2d(torch.cat(outs, 1), w("before_identity" + sep))
    r1 = rdb("RDB1", f0)
    r2 = rdb("RDB2", r1)
    r3 = rdb("RDB3", r2)
    feat = F.conv2d(torch.cat([r1, r2, r3], 1), w("after_rdb" + sep)) + f0
    feat = rdb("final.1", F.pixel_shuffle(feat, 2))
    lr = F.conv2d(feat, w("final.2" + sep), state["final.2" + sep + ".bias"], padding=1)
    out = torch.zeros(n, 3, height, width)
    for i in range(8):
        for j in range(8):
            c = 3 * (8 * i + j)
            out[:, :, i::8, j::8] = lr[:, c : c + 3]
    return torch.sigmoid(out) if variant == "llpacknet-2022" else out


def test_parameter_counts_and_output_shape():
    import torch
    from toolkit.model.llpacknet import count_parameters, create_model, macs_per_pixel

    paper = create_model("llpacknet-bmvc2020")
    assert count_parameters(paper) == 1_177_409
    folded_2022 = create_model("llpacknet-2022")
    assert count_parameters(folded_2022) == 1_169_088  # 1,170,640 with weight_g, folded
    assert sum(int(np.prod(s)) for _, s in official_layout("llpacknet-2022")) == 1_170_640
    assert round(macs_per_pixel()) == 6872
    with torch.inference_mode():
        out = paper.eval()(torch.rand(2, 1, 48, 80) * 0.01)
    assert out.shape == (2, 3, 48, 80) and out.dtype == torch.float32


def test_unknown_variant_suggests_the_closest():
    from toolkit.model.llpacknet import create_model

    with pytest.raises(ValueError, match="llpacknet-2022"):
        create_model("llpacknet-202")


@pytest.mark.parametrize("variant", ["llpacknet-bmvc2020", "llpacknet-2022"])
def test_official_checkpoint_loads_and_matches_reference(tmp_path, variant):
    import torch
    from toolkit import load_model

    state = random_official_state(variant)
    path = tmp_path / "official.pth"
    torch.save({"model": state, "epoch": 7}, path)
    model = load_model(path)
    assert model.variant == variant and not model.training
    assert not any(k.endswith(("weight_g", "weight_v")) for k in model.state_dict())
    x = torch.rand(2, 1, 64, 96) * 0.01
    ratio = None if variant == "llpacknet-bmvc2020" else 100.0
    x_in = x if ratio is None else x * ratio
    with torch.inference_mode():
        ours = model(x_in)
        ref = reference_forward(state, x_in, variant)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)
    assert ours.abs().max() > 1e-3  # not a trivially zero network


def test_checkpoint_roundtrip_through_save(tmp_path):
    import torch
    from toolkit.model.checkpoint import load_model, save_checkpoint

    model = load_model(None)
    save_checkpoint(model, tmp_path / "c.pt", note="roundtrip")
    again = load_model(tmp_path / "c.pt")
    x = torch.rand(1, 1, 32, 32) * 0.02
    with torch.inference_mode():
        torch.testing.assert_close(model(x), again(x), rtol=0, atol=0)


def _save_state(tmp_path, state, name="bad.pth"):
    import torch

    path = tmp_path / name
    torch.save({"model": state}, path)
    return path


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda s: s.pop("RDB2.conv_1x1.weight"), "missing: RDB2.conv_1x1.weight"),
        (lambda s: s.__setitem__("extra.layer.weight", __import__("torch").zeros(3)), "unexpected: extra.layer.weight"),
        (lambda s: s.__setitem__("final.2.weight", __import__("torch").zeros(192, 16, 1, 1)), "wrong shape: final.2.weight"),
    ],
)
def test_checkpoint_that_does_not_fit_is_refused_by_name(tmp_path, mutate, message):
    from toolkit.model.checkpoint import load_model
    from toolkit.errors import CheckpointError

    state = random_official_state("llpacknet-bmvc2020")
    mutate(state)
    with pytest.raises(CheckpointError, match=message.replace(".", r"\.")):
        load_model(_save_state(tmp_path, state))


def test_2022_checkpoint_with_missing_half_of_weight_norm(tmp_path):
    from toolkit.model.checkpoint import load_model
    from toolkit.errors import CheckpointError

    state = random_official_state("llpacknet-2022")
    del state["RDB1.conv_1x1.0.weight_g"]
    with pytest.raises(CheckpointError, match="weight_g"):
        load_model(_save_state(tmp_path, state))


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('LLPACK_TEST_MARKER', '/tmp/llpack-pwned')}",))


def test_pickled_code_is_never_run(tmp_path, monkeypatch):
    from toolkit.model.checkpoint import load_model
    from toolkit.errors import CheckpointError

    marker = tmp_path / "pwned"
    monkeypatch.setenv("LLPACK_TEST_MARKER", str(marker))
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"model": Payload()}, fh)
    with pytest.raises(CheckpointError, match="refused|cannot be read"):
        load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04broken zip"])
def test_garbage_checkpoint_files_are_refused(tmp_path, content):
    from toolkit.model.checkpoint import load_model
    from toolkit.errors import CheckpointError

    path = tmp_path / "garbage.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError):
        load_model(path)


def test_default_weights_or_untrained_warning(caplog):
    from toolkit.model.checkpoint import DEFAULT_CHECKPOINT, load_model

    model = load_model(None)
    if DEFAULT_CHECKPOINT.exists():
        assert model.checkpoint_info["trained"]
    else:
        assert not model.checkpoint_info["trained"]
        assert "UNTRAINED" in caplog.text


def test_numpy_pack_body_unpack_equals_the_full_forward():
    """What deployment targets run (the packed body, numpy pre/post) matches the PyTorch forward."""
    import torch
    from toolkit.camera.bayer import pack_rggb, unpack_rgb
    from toolkit.model.llpacknet import create_model

    model = create_model("llpacknet-bmvc2020").eval()
    mosaic = (torch.rand(1, 1, 48, 64) * 0.01).numpy()
    with torch.inference_mode():
        full = model(torch.from_numpy(mosaic), gain=torch.tensor([150.0])).numpy()[0]
        body = model.packed_body(torch.from_numpy(pack_rggb(mosaic[0, 0])[None] * np.float32(150.0))).numpy()[0]
    np.testing.assert_allclose(unpack_rgb(body), full, rtol=1e-5, atol=1e-6)
