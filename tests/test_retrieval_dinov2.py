"""The DINOv2 backbone of the dense retrieval methods, from a checkpoint on disk: a
randomly initialised one written here (the loading, the shapes and the end-to-end path,
not the accuracy: no pretrained weights can be downloaded)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pramloc import retrieval
from pramloc.config import RetrievalConfig
from pramloc.errors import PramlocError
from pramloc.retrieval import RetrievalInput
from pramloc.retrieval.backbones import dense_features
from pramloc.retrieval.dinov2 import DinoV2, load_checkpoint

from .conftest import frame

DIM = 64


def random_vit(registers: int = 0) -> DinoV2:
    torch.manual_seed(0)
    model = DinoV2(DIM, depth=2, patch=14, num_positions=16 * 16, registers=registers)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """Official layout: a plain state dict."""
    path = tmp_path_factory.mktemp("dinov2") / "dinov2_tiny.pth"
    torch.save(random_vit().state_dict(), path)
    return path


def test_checkpoint_loads_with_its_size(checkpoint, tmp_path):
    model = load_checkpoint(str(checkpoint))
    ref = random_vit()
    assert model.dim == DIM and len(model.blocks) == 2 and model.register_tokens is None
    for (k, a), (_, b) in zip(model.state_dict().items(), ref.state_dict().items()):
        assert torch.equal(a, b), k
    # A training checkpoint (teacher, "backbone." prefix) with register tokens.
    wrapped = tmp_path / "train.pth"
    regs = random_vit(registers=4)
    torch.save({"teacher": {f"backbone.{k}": v for k, v in regs.state_dict().items()}}, wrapped)
    m2 = load_checkpoint(str(wrapped))
    assert m2.register_tokens.shape == (1, 4, DIM)
    x = torch.rand(1, 3, 14 * 5, 14 * 7)
    with torch.inference_mode():
        np.testing.assert_allclose(m2.patch_features(x).numpy(), regs.eval().patch_features(x).numpy(), atol=1e-5)


def test_dense_features_and_anyloc_end_to_end(checkpoint, kitchen_root):
    conf = RetrievalConfig(method="anyloc", backbone="dinov2", weights=str(checkpoint), max_side=224,
                           dense_words=4)
    item = RetrievalInput(image=kitchen_root / frame(0))
    f = dense_features(item, conf)  # 224x168 -> 16 x 12 patches (sides multiples of 14)
    assert f.shape == (168 // 14, 224 // 14, DIM)
    np.testing.assert_allclose(np.linalg.norm(f, axis=-1), 1.0, atol=2e-3)
    items = [RetrievalInput(image=kitchen_root / frame(i)) for i in range(0, 550, 99)]
    index = retrieval.fit(conf, items)
    assert index.vectors.shape == (6, 4 * DIM) and index.settings.weights == str(checkpoint)
    idx, _ = index.search(index.describe(RetrievalInput(image=kitchen_root / frame(198))), 6)
    assert idx[0] == 2  # a map image finds itself, whatever the weights
    back = retrieval.from_arrays("anyloc", index.to_arrays())
    np.testing.assert_array_equal(back.describe(items[1]), index.describe(items[1]))


def test_bad_checkpoints_are_one_line_errors(tmp_path):
    with pytest.raises(PramlocError, match="checkpoint not found"):
        load_checkpoint(str(tmp_path / "none.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(PramlocError, match="junk.pth: cannot read the checkpoint"):
        load_checkpoint(str(junk))
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(PramlocError, match="not a DINOv2 ViT checkpoint"):
        load_checkpoint(str(other))
    with pytest.raises(PramlocError, match="needs retrieval.weights"):
        dense_features(RetrievalInput(image=np.zeros((64, 64), np.uint8)), RetrievalConfig(backbone="dinov2"))
