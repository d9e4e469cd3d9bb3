"""The artifact and the runtime: API, reproducibility, bad inputs, bad files, threads."""

import json
import subprocess
import sys
import threading
import zipfile

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import dsc
import dsc.runtime
from dsc import ShapeError, TargetError
from dsc.runtime.errors import ArtifactError
from dsc.tools.cli import main


def ew_model():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Add", ["r", "c"], ["y"], name="add"),
        helper.make_node("Sigmoid", ["y"], ["z"], name="sig"),
        helper.make_node("Mul", ["z", "y"], ["w"], name="mul"),
    ]
    c = helper.make_tensor("c", TensorProto.FLOAT, [37], np.linspace(-1, 1, 37))
    gr = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5, 37])], [helper.make_tensor_value_info("w", TensorProto.FLOAT, None), helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [c]
    )
    return helper.make_model(gr, opset_imports=[helper.make_opsetid("", 17)])


def ort_run(model, feeds):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    p = tmp_path_factory.mktemp("a") / "ew.dsc"
    dsc.compile(ew_model(), output=str(p))
    return str(p)


X = np.random.default_rng(1).standard_normal((3, 5, 37)).astype(np.float32)


def test_session_api_matches_onnxruntime(artifact):
    sess = dsc.runtime.load(artifact)
    (inp,) = sess.get_inputs()
    assert (inp.name, inp.shape, inp.type) == ("x", [3, 5, 37], "tensor(float)")
    assert [o.name for o in sess.get_outputs()] == ["w", "y"]
    got = sess.run(None, {"x": X})
    for g, w in zip(got, ort_run(ew_model(), {"x": X})):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
    (y,) = sess.run(["y"], {"x": X})
    np.testing.assert_allclose(y, got[1])


def test_reproducible(artifact):
    assert dsc.compile(ew_model()) == open(artifact, "rb").read()


def test_manifest(artifact):
    with zipfile.ZipFile(artifact) as z:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
        m = json.loads(z.read("manifest.json"))
    for key in ("dsc_version", "target", "inputs", "outputs", "arena_bytes", "weights", "source_model_sha256", "plan"):
        assert key in m
    assert m["target"]["cpu_features"] and m["weights"]["sha256"]


def test_bad_inputs_are_refused(artifact):
    sess = dsc.runtime.load(artifact)
    with pytest.raises(ShapeError, match="missing \\['x'\\]"):
        sess.run(None, {"y": X})
    with pytest.raises(ShapeError, match="unknown \\['extra'\\]"):
        sess.run(None, {"x": X, "extra": X})
    with pytest.raises(ShapeError, match="shape \\[3, 5, 36\\]"):
        sess.run(None, {"x": X[..., :36]})
    with pytest.raises(ShapeError, match="dtype float64"):
        sess.run(None, {"x": X.astype(np.float64)})
    with pytest.raises(ShapeError, match="unknown output names"):
        sess.run(["nope"], {"x": X})
    # safe conversions and non-contiguous views are accepted
    ref = sess.run(None, {"x": X})[0]
    np.testing.assert_allclose(sess.run(None, {"x": X.astype(np.float16).astype(np.float16)})[0], sess.run(None, {"x": X.astype(np.float16).astype(np.float32)})[0])
    nc = np.asfortranarray(X)
    np.testing.assert_array_equal(sess.run(None, {"x": nc})[0], ref)


def test_truncated_altered_foreign(artifact, tmp_path):
    data = open(artifact, "rb").read()
    (tmp_path / "trunc.dsc").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="truncated"):
        dsc.runtime.load(str(tmp_path / "trunc.dsc"))
    # flip a byte inside the weights member
    with zipfile.ZipFile(artifact) as z:
        members = {n: z.read(n) for n in z.namelist()}
    w = bytearray(members["weights.bin"])
    w[0] ^= 0xFF
    members["weights.bin"] = bytes(w)
    with zipfile.ZipFile(tmp_path / "altered.dsc", "w") as z:
        for n, d in members.items():
            z.writestr(n, d)
    with pytest.raises(ArtifactError, match="weights.bin does not match its hash"):
        dsc.runtime.load(str(tmp_path / "altered.dsc"))
    (tmp_path / "foreign.dsc").write_bytes(b"\x7fELF" + bytes(100))
    with pytest.raises(ArtifactError, match="not a dsc artifact"):
        dsc.runtime.load(str(tmp_path / "foreign.dsc"))
    with pytest.raises(ArtifactError, match="no such file"):
        dsc.runtime.load(str(tmp_path / "missing.dsc"))


def test_foreign_architecture_refused(artifact, tmp_path):
    with zipfile.ZipFile(artifact) as z:
        members = {n: z.read(n) for n in z.namelist()}
    m = json.loads(members["manifest.json"])
    m["target"]["triple"] = "aarch64-unknown-linux-gnu"
    m["target"]["name"] = "cortex-a78ae"
    with zipfile.ZipFile(tmp_path / "arm.dsc", "w") as z:
        z.writestr("manifest.json", json.dumps(m))
        for n, d in members.items():
            if n != "manifest.json":
                z.writestr(n, d)
    with pytest.raises(TargetError, match="compiled for aarch64"):
        dsc.runtime.load(str(tmp_path / "arm.dsc"))


def test_missing_cpu_feature_refused(artifact, tmp_path):
    with zipfile.ZipFile(artifact) as z:
        members = {n: z.read(n) for n in z.namelist()}
    m = json.loads(members["manifest.json"])
    m["target"]["cpu_features"] = ["avx512f", "imaginary-feature"]
    with zipfile.ZipFile(tmp_path / "feat.dsc", "w") as z:
        z.writestr("manifest.json", json.dumps(m))
        for n, d in members.items():
            if n != "manifest.json":
                z.writestr(n, d)
    with pytest.raises(TargetError, match="imaginary-feature"):
        dsc.runtime.load(str(tmp_path / "feat.dsc"))


def test_concurrent_runs_match_single_thread(artifact):
    sess = dsc.runtime.load(artifact)
    xs = [np.random.default_rng(i).standard_normal((3, 5, 37)).astype(np.float32) for i in range(8)]
    want = [sess.run(None, {"x": x}) for x in xs]
    got = [None] * len(xs)

    def work(i):
        for _ in range(20):
            got[i] = sess.run(None, {"x": xs[i]})

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w, g in zip(want, got):
        for a, b in zip(w, g):
            np.testing.assert_array_equal(a, b)


def test_runtime_loads_without_compiler(artifact):
    code = (
        "import sys, numpy as np, dsc.runtime\n"
        f"s = dsc.runtime.load({artifact!r})\n"
        "s.run(None, {'x': np.zeros((3, 5, 37), np.float32)})\n"
        "bad = [m for m in ('xdsl', 'onnx', 'dsc.dialects', 'dsc.passes', 'dsc.backends', 'dsc.frontends', 'dsc.tools') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_cli_compile_inspect_run(tmp_path, capsys):
    onnx.save(ew_model(), tmp_path / "m.onnx")
    out = tmp_path / "m.dsc"
    assert main(["compile", str(tmp_path / "m.onnx"), "-o", str(out)]) == 0
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "input      x: float32 [3, 5, 37]" in text and "x86_64" in text
    np.save(tmp_path / "x.npy", X)
    assert main(["run", str(out), "--input", f"x={tmp_path / 'x.npy'}", "-o", str(tmp_path / "o.npz")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "o.npz")["w"], ort_run(ew_model(), {"x": X})[0], rtol=1e-4, atol=1e-4)
    assert main(["run", str(tmp_path / "m.onnx"), "--compare", "onnxruntime"]) == 0
