"""BERT encoder of the model zoo, shaped like a ``torch.onnx.export`` at opset 17.

The graph follows what the TorchScript exporter emits for a Hugging Face
``BertModel`` with eager attention (pooler left out):

* embeddings: ``Gather`` on the word, position (constant ``position_ids``
  buffer) and token-type (constant zeros buffer) tables, two ``Add`` and
  ``LayerNormalization`` (epsilon 1e-12);
* extended mask: ``Unsqueeze`` x2 -> ``Cast`` -> ``Sub(1, m)`` ->
  ``Mul(., finfo(float32).min)``, shape [batch, 1, 1, seq];
* per layer: ``MatMul`` + ``Add`` for Q/K/V; head split through the runtime
  shape subgraph (Shape -> Gather -> Unsqueeze -> Concat -> Reshape); Transpose;
  ``MatMul``; ``Div`` by sqrt(head_dim); ``Add`` mask; ``Softmax(axis=-1)``;
  ``MatMul``; Transpose; Reshape (again from Shape ops); output dense + residual
  + LayerNormalization; FFN with exact GELU as ``x*(1+Erf(x/sqrt 2))*0.5``;
  residual + LayerNormalization.

Linear weights are stored as the transposed [in, out] matrices the exporter
feeds to ``MatMul``, named ``<module>.weight_t``.  Weights are N(0, 1/fan_in)
(embeddings N(0, 0.02), biases N(0, 0.02), LayerNorm gamma ~ U(0.9, 1.1)) so
attention is not uniform and activations stay O(1).
"""

from __future__ import annotations

import math

import numpy as np
import onnx

try:
    from .zoo_graph import FLOAT, INT64, GraphBuilder, Scope
except ImportError:  # imported as a top-level module with tools/ on sys.path
    from zoo_graph import FLOAT, INT64, GraphBuilder, Scope

LN_EPS = 1e-12


def _linear(gb: GraphBuilder, x: str, s: Scope, fan_in: int, fan_out: int) -> str:
    """``nn.Linear`` on a 3-D input: ``Add(bias, MatMul(x, W^T))``."""
    w = gb.randn(s.p("weight_t"), (fan_in, fan_out), 1.0 / math.sqrt(fan_in))
    b = gb.randn(s.p("bias"), (fan_out,), 0.02)
    return gb.op("Add", [b, gb.op("MatMul", [x, w], s)], s)


def _layer_norm(gb: GraphBuilder, x: str, s: Scope, hidden: int, output: str | None = None):
    gamma = gb.uniform(s.p("weight"), (hidden,), 0.9, 1.1)
    beta = gb.randn(s.p("bias"), (hidden,), 0.02)
    return gb.op("LayerNormalization", [x, gamma, beta], s, output=output, axis=-1,
                 epsilon=LN_EPS)


def _runtime_shape(gb: GraphBuilder, x: str, s: Scope, tail: list[int]) -> str:
    """``x.size()[:2] + tuple(tail)`` as torch traces it: Shape/Gather/Unsqueeze/Concat."""
    shape = gb.op("Shape", [x], s)
    dims = []
    for axis in (0, 1):
        d = gb.op("Gather", [shape, gb.constant(s, axis, np.int64)], s, axis=0)
        dims.append(gb.op("Unsqueeze", [d, gb.constant(s, [0], np.int64)], s))
    dims += [gb.constant(s, [t], np.int64) for t in tail]
    return gb.op("Concat", dims, s, axis=0)


def _split_heads(gb, x, s: Scope, heads, head_dim, perm) -> str:
    """``x.view(b, s, heads, head_dim).permute(*perm)``."""
    x = gb.op("Reshape", [x, _runtime_shape(gb, x, s, [heads, head_dim])], s)
    return gb.op("Transpose", [x], s, perm=perm)


def _self_attention(gb, s: Scope, h, mask, hidden, heads) -> str:
    head_dim = hidden // heads
    q = _split_heads(gb, _linear(gb, h, s.sub("query"), hidden, hidden), s, heads, head_dim,
                     [0, 2, 1, 3])
    k = _split_heads(gb, _linear(gb, h, s.sub("key"), hidden, hidden), s, heads, head_dim,
                     [0, 2, 3, 1])
    v = _split_heads(gb, _linear(gb, h, s.sub("value"), hidden, hidden), s, heads, head_dim,
                     [0, 2, 1, 3])
    scores = gb.op("MatMul", [q, k], s)
    scores = gb.op("Div", [scores, gb.constant(s, math.sqrt(head_dim))], s)
    probs = gb.op("Softmax", [gb.op("Add", [scores, mask], s)], s, axis=-1)
    ctx = gb.op("Transpose", [gb.op("MatMul", [probs, v], s)], s, perm=[0, 2, 1, 3])
    return gb.op("Reshape", [ctx, _runtime_shape(gb, ctx, s, [hidden])], s)


def _gelu(gb, x, s: Scope) -> str:
    """Exact GELU as torch exports it before opset 20."""
    erf = gb.op("Erf", [gb.op("Div", [x, gb.constant(s, math.sqrt(2.0))], s)], s)
    y = gb.op("Mul", [x, gb.op("Add", [erf, gb.constant(s, 1.0)], s)], s)
    return gb.op("Mul", [y, gb.constant(s, 0.5)], s)


def _residual_block(gb, s: Scope, x, residual, fan_in, hidden, output=None) -> str:
    """BertSelfOutput / BertOutput: dense -> (+ residual) -> LayerNorm."""
    y = _linear(gb, x, s.sub("dense"), fan_in, hidden)
    y = gb.op("Add", [y, residual], s)
    return _layer_norm(gb, y, s.sub("LayerNorm"), hidden, output)


def _layer(gb, s: Scope, h, mask, hidden, heads, intermediate, output=None) -> str:
    att = s.sub("attention")
    ctx = _self_attention(gb, att.sub("self"), h, mask, hidden, heads)
    h = _residual_block(gb, att.sub("output"), ctx, h, hidden, hidden)
    inter = s.sub("intermediate")
    y = _linear(gb, h, inter.sub("dense"), hidden, intermediate)
    y = _gelu(gb, y, inter.sub("intermediate_act_fn"))
    return _residual_block(gb, s.sub("output"), y, h, intermediate, hidden, output)


def _embeddings(gb, s: Scope, ids, seq, hidden, vocab, max_positions) -> str:
    word = gb.randn(s.sub("word_embeddings").p("weight"), (vocab, hidden), 0.02)
    pos = gb.randn(s.sub("position_embeddings").p("weight"), (max_positions, hidden), 0.02)
    typ = gb.randn(s.sub("token_type_embeddings").p("weight"), (2, hidden), 0.02)
    pos_ids = gb.param(s.p("position_ids"), np.arange(seq, dtype=np.int64)[None, :])
    type_ids = gb.param(s.p("token_type_ids"), np.zeros((1, seq), dtype=np.int64))
    x = gb.op("Gather", [word, ids], s.sub("word_embeddings"), axis=0)
    t = gb.op("Gather", [typ, type_ids], s.sub("token_type_embeddings"), axis=0)
    x = gb.op("Add", [x, t], s)
    p = gb.op("Gather", [pos, pos_ids], s.sub("position_embeddings"), axis=0)
    x = gb.op("Add", [x, p], s)
    return _layer_norm(gb, x, s.sub("LayerNorm"), hidden)


def _extended_mask(gb, mask, mask_value: float) -> str:
    """``(1.0 - mask[:, None, None, :].float()) * mask_value``."""
    root = Scope()
    m = gb.op("Unsqueeze", [mask, gb.constant(root, [1], np.int64)], root)
    m = gb.op("Unsqueeze", [m, gb.constant(root, [2], np.int64)], root)
    m = gb.op("Cast", [m], root, to=onnx.TensorProto.FLOAT)
    m = gb.op("Sub", [gb.constant(root, 1.0), m], root)
    return gb.op("Mul", [m, gb.constant(root, mask_value)], root)


def bert_base(batch: int = 1, seq: int = 128, layers: int = 12, hidden: int = 768,
              heads: int = 12, intermediate: int = 3072, vocab: int = 30522,
              max_positions: int = 512, mask_value: float = float(np.finfo(np.float32).min),
              seed: int = 0) -> onnx.ModelProto:
    """HF ``BertModel`` encoder (no pooler); defaults are BERT-base.

    Inputs ``input_ids`` / ``attention_mask`` int64 [batch, seq]; output
    ``last_hidden_state`` float32 [batch, seq, hidden].
    """
    if layers < 1 or hidden % heads or seq > max_positions:
        raise ValueError("need layers >= 1, hidden % heads == 0 and seq <= max_positions")
    gb, root = GraphBuilder(seed), Scope()
    ids = gb.add_input("input_ids", INT64, [batch, seq])
    mask = _extended_mask(gb, gb.add_input("attention_mask", INT64, [batch, seq]), mask_value)
    h = _embeddings(gb, root.sub("embeddings"), ids, seq, hidden, vocab, max_positions)
    encoder = root.sub("encoder")
    for i in range(layers):
        out = "last_hidden_state" if i == layers - 1 else None
        h = _layer(gb, encoder.item("layer", i), h, mask, hidden, heads, intermediate, out)
    gb.add_output("last_hidden_state", FLOAT, [batch, seq, hidden])
    meta = {"dsc.zoo.model": "bert_base", "dsc.zoo.vocab_size": vocab, "dsc.zoo.seq": seq,
            "dsc.zoo.layers": layers, "dsc.zoo.hidden": hidden, "dsc.zoo.heads": heads,
            "dsc.zoo.intermediate": intermediate, "dsc.zoo.seed": seed}
    return gb.build("HF BertModel encoder (random weights)", meta)
