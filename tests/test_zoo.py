"""Tests for the dsc model zoo (`dsc.tools.zoo`): the small variants build,
pass the ONNX checker, run in onnxruntime and are reproducible."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from dsc.tools import zoo

NAMES = ["resnet18", "resnet50", "mobilenetv2", "efficientnet_b0", "bert_base", "mlp"]


def _run(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _output_shape(model):
    return tuple(d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim)


def test_registry_names():
    assert sorted(zoo.ZOO) == sorted(NAMES)
    assert sorted(zoo.SMALL) == sorted(NAMES)
    with pytest.raises(KeyError):
        zoo.build("no_such_model")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batch", [1, 2])
def test_small_model_checks_and_runs(name, batch):
    model = zoo.build(name, batch=batch, small=True)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    (out,) = _run(model, zoo.example_inputs(model))
    assert out.shape == _output_shape(model)
    assert out.shape[0] == batch
    assert np.isfinite(out).all()
    assert out.std() > 1e-3


def test_small_models_are_reproducible():
    for name in NAMES:
        a = zoo.build(name, small=True).SerializeToString()
        assert a == zoo.build(name, small=True).SerializeToString(), name
    other_seed = zoo.build("mlp", small=True, seed=1).SerializeToString()
    assert other_seed != zoo.build("mlp", small=True).SerializeToString()


def test_names_are_unique_and_torch_like():
    model = zoo.build("resnet18", small=True)
    node_names = [n.name for n in model.graph.node]
    init_names = [t.name for t in model.graph.initializer]
    assert len(set(node_names)) == len(node_names)
    assert len(set(init_names)) == len(init_names)
    assert "/layer1/layer1.0/conv1/Conv" in node_names
    assert "layer1.0.bn1.running_var" in init_names


def _param_count(model):
    """Learnable parameters as torch counts them (BN running stats and int buffers excluded)."""
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer
               if t.data_type == onnx.TensorProto.FLOAT
               and not t.name.endswith(("running_mean", "running_var")))


@pytest.mark.parametrize("name,expected", [
    ("resnet18", 11_689_512), ("mobilenetv2", 3_504_872), ("efficientnet_b0", 5_288_548),
    ("mlp", 669_706),
])
def test_full_size_parameter_counts_match_torchvision(name, expected):
    assert _param_count(zoo.build(name)) == expected


def test_bert_example_inputs_and_masking():
    model = zoo.build("bert_base", batch=2, small=True)
    feeds = zoo.example_inputs(model, seed=3)
    ids, mask = feeds["input_ids"], feeds["attention_mask"]
    assert ids.dtype == mask.dtype == np.int64 and ids.shape == (2, 16)
    assert ids.min() >= 0 and ids.max() < 100
    assert (mask[:, :12] == 1).all() and (mask[:, 12:] == 0).all()
    # Tokens at masked positions must not change the unmasked outputs.
    (out,) = _run(model, feeds)
    ids2 = ids.copy()
    ids2[:, 12:] = (ids2[:, 12:] + 7) % 100
    (out2,) = _run(model, {**feeds, "input_ids": ids2})
    np.testing.assert_allclose(out2[:, :12], out[:, :12], rtol=1e-5, atol=1e-5)
    assert not np.allclose(out2[:, 12:], out[:, 12:])


def test_save_roundtrip(tmp_path):
    path = zoo.save("mlp", str(tmp_path / "mlp.onnx"), small=True)
    assert onnx.load(path).SerializeToString() == zoo.build("mlp", small=True).SerializeToString()
