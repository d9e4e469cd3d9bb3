"""Phases, pipelines and every IR-dump flag of `dsc compile` / `dsc opt`, including the round trip of a dump."""

import os

import numpy as np
import onnx
import pytest

from dsc.dialects.asm import parse_module
from dsc.frontends.onnx import import_onnx
from dsc.pipeline import PHASES, parse_passes, pipeline_for
from dsc.reference import run_module
from dsc.targets import get_target
from dsc.tools import zoo
from dsc.tools.cli import main


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("m") / "resnet18_small.onnx"
    onnx.save(zoo.build("resnet18", small=True), p)
    return str(p)


def test_pipelines_are_per_target():
    cpu = [spec for _, spec in pipeline_for(get_target("host"))]
    gpu = [spec for _, spec in pipeline_for(get_target("orin"))]
    assert not any(s.startswith("place-devices") for s in cpu)
    assert any(s.startswith("place-devices") and "sm_87" in s for s in gpu)
    assert [ph for ph, _ in pipeline_for(get_target("host"))] == sorted([ph for ph, _ in pipeline_for(get_target("host"))], key=PHASES.index)


def test_print_pipeline(capsys, model_path):
    assert main(["compile", model_path, "--print-pipeline"]) == 0
    out = capsys.readouterr().out
    assert "fold-batchnorm" in out and "plan-memory" in out and "place-devices" not in out


def test_compile_to_stops_after_phase(capsys, model_path):
    assert main(["compile", model_path, "--compile-to", "graph-opt"]) == 0
    out = capsys.readouterr().out
    assert "graph.conv" in out and "kernel.fused" not in out and "graph.batch_norm" not in out
    assert main(["compile", model_path, "--compile-to", "fusion"]) == 0
    assert "kernel.fused" in capsys.readouterr().out


def test_lowering_prints_llvm_ir_and_codegen_writes_artifact(capsys, model_path, tmp_path):
    assert main(["compile", model_path, "--compile-to", "lowering"]) == 0
    out = capsys.readouterr().out
    assert "define void @dsc_run" in out.replace('"', "") and "fma" in out
    assert main(["compile", model_path, "-o", str(tmp_path / "m.dsc")]) == 0
    assert (tmp_path / "m.dsc").stat().st_size > 0


def test_print_ir_after_all_and_before(capsys, model_path):
    assert main(["compile", model_path, "--compile-to", "graph-opt", "--print-ir-after-all", "--print-ir-before", "cse", "--elide-constants-larger-than", "16"]) == 0
    err = capsys.readouterr().err
    assert err.count("// -----// IR Dump After") == 5
    assert "// -----// IR Dump Before cse //----- //" in err
    assert "dense_resource<__elided__>" in err


def test_print_ir_after_named_and_after_change(capsys, model_path):
    assert main(["compile", model_path, "--compile-to", "graph-opt", "--print-ir-after", "fold-batchnorm"]) == 0
    err = capsys.readouterr().err
    assert err.count("IR Dump After") == 1 and "IR Dump After fold-batchnorm" in err
    assert main(["compile", model_path, "--compile-to", "graph-opt", "--print-ir-after-change"]) == 0
    err = capsys.readouterr().err
    assert "IR Dump After fold-batchnorm" in err  # it changes resnet
    assert err.count("IR Dump After") < 5  # a pass that changed nothing is not printed


def test_timing_table(capsys, model_path):
    assert main(["compile", model_path, "--compile-to", "fusion", "--timing"]) == 0
    err = capsys.readouterr().err
    assert "time (ms)" in err and "fuse-conv-bn-relu" in err and "total" in err


def test_dump_ir_dir_and_resume(tmp_path, model_path, capsys):
    d = tmp_path / "ir"
    assert main(["compile", model_path, "--compile-to", "fusion", "--dump-ir-dir", str(d), "-o", str(tmp_path / "out.mlir")]) == 0
    files = sorted(os.listdir(d))
    assert files[0] == "00-import.mlir" and files[1] == "01-canonicalize.mlir"
    assert any(f.endswith("-fuse-conv-bn-relu.mlir") for f in files)
    # every dump parses back and computes what the model computes
    m = zoo.build("resnet18", small=True)
    feeds = zoo.example_inputs(m)
    want = run_module(import_onnx(m), feeds)[0]
    for f in files:
        got = run_module(parse_module(open(d / f).read(), f), feeds)[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # resume: dsc opt on the graph-opt dump, and compile --compile-from
    last_graph_opt = [f for f in files if f.endswith("-dce.mlir")][0]
    out = tmp_path / "fused.mlir"
    assert main(["opt", str(d / last_graph_opt), "-p", "fuse-conv-bn-relu,fuse-matmul-epilogue,fuse-reductions,fuse-elementwise,outline-kernels", "-o", str(out)]) == 0
    np.testing.assert_allclose(run_module(parse_module(out.read_text()), feeds)[0], want, rtol=1e-4, atol=1e-4)
    assert main(["compile", "--compile-from", "graph-opt", str(d / last_graph_opt), "--compile-to", "memory-planning", "-o", str(tmp_path / "planned.mlir")]) == 0
    assert "offsets" in (tmp_path / "planned.mlir").read_text()


def test_opt_unknown_pass_and_bad_ir(tmp_path, capsys):
    p = tmp_path / "x.mlir"
    p.write_text("builtin.module {\n}\n")
    assert main(["opt", str(p), "-p", "fold-everything"]) == 1
    assert "unknown pass(es): fold-everything" in capsys.readouterr().err
    p.write_text("builtin.module { %0 = graph.relu }")
    assert main(["opt", str(p)]) == 1
    assert "does not parse" in capsys.readouterr().err


def test_parse_passes_options():
    (p,) = parse_passes('place-devices{gpu="sm_87" overrides="/fc/Gemm=cpu"}')
    assert p.gpu == "sm_87" and p.overrides == "/fc/Gemm=cpu"


def test_explain_fusion_and_memory_report(capsys, model_path):
    assert main(["compile", model_path, "--compile-to", "memory-planning", "--explain-fusion", "--memory-report", "-o", os.devnull]) == 0
    err = capsys.readouterr().err
    # every ONNX node of the model is listed, with its kernel or a reason
    m = onnx.load(model_path)
    for n in m.graph.node:
        assert n.name in err
    assert "conv_bn_relu" in err or "conv_add_relu" in err
    assert "arena" in err and "lower bound" in err
