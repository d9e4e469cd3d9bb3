"""The `dsc` command and the error family: one clear line, a hint, exit code 1, no traceback."""

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from dsc import DscError, ModelError, ShapeError, UnsupportedOpError
from dsc.frontends.onnx import import_onnx
from dsc.tools.cli import main


def run_cli(*args):
    p = subprocess.run([sys.executable, "-m", "dsc", *args], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def tiny_model(op="Relu", shape=(2, 3), extra_nodes=()):
    nodes = [helper.make_node(op, ["x"], ["y"], name="first")] + list(extra_nodes)
    out = nodes[-1].output[0]
    gr = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))], [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)])
    return helper.make_model(gr, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def relu_path(tmp_path):
    p = tmp_path / "relu.onnx"
    onnx.save(tiny_model(), p)
    return str(p)


def test_help_and_module_entry_point():
    rc, out, _ = run_cli("--help")
    assert rc == 0 and "compile" in out and "check" in out
    rc, out, _ = run_cli("compile", "--help")
    assert rc == 0 and "--target" in out and "--emit" in out


def test_compile_prints_graph_ir(relu_path, capsys):
    assert main(["compile", relu_path, "--emit", "graph"]) == 0
    out = capsys.readouterr().out
    assert "graph.relu" in out and 'loc("first")' in out and "func.func @main" in out


def test_missing_file_is_one_line(tmp_path):
    rc, out, err = run_cli("compile", str(tmp_path / "nope.onnx"))
    assert rc == 1
    assert err.startswith("error: ") and "no such file" in err and "Traceback" not in err


def test_truncated_file(tmp_path, relu_path):
    data = open(relu_path, "rb").read()
    bad = tmp_path / "trunc.onnx"
    bad.write_bytes(data[: len(data) // 2])
    rc, _, err = run_cli("compile", str(bad))
    assert rc == 1 and "Traceback" not in err and "truncated" in err


def test_garbage_file(tmp_path):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(os.urandom(256))
    with pytest.raises(ModelError):
        import_onnx(str(bad))


def test_unknown_target_suggests(relu_path):
    rc, _, err = run_cli("compile", relu_path, "--target", "orinn")
    assert rc == 1 and "unknown target 'orinn'" in err and "orin" in err and "Traceback" not in err


def test_unsupported_ops_listed_all_at_once():
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="r"),
        helper.make_node("Hardmax", ["a"], ["b"], name="hm1"),
        helper.make_node("Hardmax", ["b"], ["c"], name="hm2"),
        helper.make_node("Celu", ["c"], ["d"], name="celu"),
    ]
    gr = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])], [helper.make_tensor_value_info("d", TensorProto.FLOAT, [2])])
    m = helper.make_model(gr, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedOpError) as e:
        import_onnx(m)
    msg = str(e.value)
    assert "Hardmax (nodes: hm1, hm2)" in msg and "Celu (nodes: celu)" in msg and "2 unsupported op type(s)" in msg


def test_check_command(tmp_path, capsys):
    m = tiny_model(extra_nodes=[helper.make_node("Hardmax", ["y"], ["z"], name="hm")])
    p = tmp_path / "m.onnx"
    onnx.save(m, p)
    assert main(["check", str(p)]) == 1
    out = capsys.readouterr().out
    assert "Relu" in out and "supported" in out and "Hardmax" in out and "NOT SUPPORTED" in out


def test_symbolic_dims_need_input_shape(tmp_path):
    m = tiny_model(shape=["batch", 3])
    with pytest.raises(ShapeError, match="symbolic dimension 'batch'") as e:
        import_onnx(m)
    assert "--input-shape x=" in str(e.value)
    mod = import_onnx(m, input_shapes={"x": (4, 3)})
    assert "tensor<4x3xf32>" in str(mod)


def test_dangling_input_is_model_error():
    nodes = [helper.make_node("Relu", ["nowhere"], ["y"], name="r")]
    gr = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    with pytest.raises(ModelError, match="node 'r' \\(Relu\\) uses 'nowhere'"):
        import_onnx(helper.make_model(gr))


def test_shape_mismatch_names_node():
    nodes = [helper.make_node("Add", ["x", "c"], ["y"], name="bad_add")]
    init = [helper.make_tensor("c", TensorProto.FLOAT, [4], np.zeros(4))]
    gr = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], init)
    with pytest.raises(DscError, match="node 'bad_add' \\(Add\\).*do not broadcast"):
        import_onnx(helper.make_model(gr, opset_imports=[helper.make_opsetid("", 17)]))


def test_run_compares_with_onnxruntime(relu_path, capsys):
    assert main(["run", relu_path, "--compare", "onnxruntime"]) == 0
    assert "OK" in capsys.readouterr().out


def test_run_with_input_file_and_output(tmp_path, relu_path):
    x = np.array([[-1, 2, -3], [4, -5, 6]], np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", relu_path, "--input", f"x={tmp_path / 'x.npy'}", "-o", str(tmp_path / "o.npz")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "o.npz")["y"], np.maximum(x, 0))


def test_runtime_imports_without_compiler():
    code = "import sys, dsc.runtime; bad=[m for m in ('xdsl','onnx','dsc.dialects','dsc.frontends') if m in sys.modules]; print(bad); assert not bad"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_every_package_is_listed_in_pyproject():
    """A built wheel ships only the packages pyproject lists: every folder with an __init__.py must be there."""
    import pathlib
    import tomllib

    root = pathlib.Path(__file__).resolve().parent.parent
    cfg = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    dirs = {v: k for k, v in cfg["package-dir"].items()}
    found = set()
    for top, name in dirs.items():
        for init in (root / top).rglob("__init__.py"):
            rel = init.parent.relative_to(root / top)
            found.add(".".join([name, *rel.parts]) if rel.parts else name)
    assert found == listed, f"missing: {sorted(found - listed)}, stale: {sorted(listed - found)}"
