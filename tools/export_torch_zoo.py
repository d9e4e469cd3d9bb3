"""Export the real PyTorch models behind the dsc zoo to ONNX (opset 17).

    python -m dsc.tools.export_torch_zoo --out DIR [--models resnet18 bert_base ...]

Needs torch + torchvision (and transformers for ``bert_base``); nothing is
downloaded: torchvision models use ``weights=None`` and BERT is a randomly
initialised ``BertModel(BertConfig())`` (BERT-base sizes).  Shapes are fixed:
batch 1, images 3x224x224, sequence length 128.  Input/output names match
`dsc.tools.zoo`.  The TorchScript exporter is used (``dynamo=False`` where the
flag exists) with ``TrainingMode.PRESERVE`` on an eval-mode model and no
constant folding, so Conv and BatchNormalization stay separate nodes.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys

VISION = {"resnet18": "resnet18", "resnet50": "resnet50", "mobilenetv2": "mobilenet_v2",
          "efficientnet_b0": "efficientnet_b0"}
MODELS = [*VISION, "bert_base"]


def _export(torch, model, args, path, input_names, output_names):
    kwargs = dict(opset_version=17, input_names=input_names, output_names=output_names,
                  do_constant_folding=False, training=torch.onnx.TrainingMode.PRESERVE)
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    with torch.no_grad():
        torch.onnx.export(model.eval(), args, path, **kwargs)


def _export_vision(torch, name, path):
    import torchvision

    model = getattr(torchvision.models, VISION[name])(weights=None)
    _export(torch, model, (torch.randn(1, 3, 224, 224),), path, ["input"], ["output"])


def _export_bert(torch, path, seq=128):
    from transformers import BertConfig, BertModel

    class LastHiddenState(torch.nn.Module):
        def __init__(self):
            super().__init__()
            config = BertConfig(attn_implementation="eager")  # bert-base sizes
            self.bert = BertModel(config, add_pooling_layer=False)

        def forward(self, input_ids, attention_mask):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             return_dict=True).last_hidden_state

    model = LastHiddenState()
    ids = torch.randint(0, model.bert.config.vocab_size, (1, seq), dtype=torch.long)
    mask = torch.ones(1, seq, dtype=torch.long)
    _export(torch, model, (ids, mask), path, ["input_ids", "attention_mask"],
            ["last_hidden_state"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=MODELS)
    args = parser.parse_args(argv)
    try:
        import torch
        if any(m in VISION for m in args.models):
            import torchvision  # noqa: F401
        if "bert_base" in args.models:
            import transformers  # noqa: F401
    except ImportError as e:
        print(f"error: {e.name} is not installed; export_torch_zoo needs torch, torchvision "
              "and transformers (use dsc.tools.zoo for the torch-free models)", file=sys.stderr)
        return 1
    torch.manual_seed(0)
    os.makedirs(args.out, exist_ok=True)
    for name in args.models:
        path = os.path.join(args.out, f"{name}.onnx")
        if name == "bert_base":
            _export_bert(torch, path)
        else:
            _export_vision(torch, name, path)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
