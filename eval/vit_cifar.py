"""The CIFAR-10 Vision Transformer whose weights are in the shared data (vit-cifar10/, PROVENANCE.md).

Written from the checkpoint's keys and shapes: a 4x4 patch embedding (Conv2d 3->128, stride 4:
64 patches of a 32x32 image), a CLS token, learned position embeddings (1, 65, 128), torch's
``nn.TransformerEncoder`` of 6 post-norm ReLU layers (d_model 128, 8 heads, FFN 256), and a
LayerNorm + Linear head on the CLS token. About 0.8M parameters.

A model source ``python:vit_cifar.py:build`` (in eval/vit.yaml, with the weights as
``model.checkpoint``); ``pretrained(weights)`` loads them strictly outside a recipe.

    python eval/vit_cifar.py --data /work/shared/data [--onnx OUT.onnx]   # top-1 on images 0-999
    python eval/vit_cifar.py --prepare runs/vit-cifar [--data DIR]        # eval/vit.yaml's files
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # cifar_data beside this file, however imported
import cifar_data  # noqa: E402

WEIGHTS = "vit-cifar10/vit_cifar10.pth"
WEIGHTS_SHA256 = "2d061eb158b8ea126c1b96ee657862bf2217696ed40fff3bdc424007d13f1397"  # PROVENANCE.md
EXACT_1000 = cifar_data.EXACT_1000
NEEDS = (WEIGHTS, cifar_data.EXACT_1000, cifar_data.JPEG_10K)
# Its training normalisation (PROVENANCE.md): RGB / 255, then these per-channel statistics.
MEAN_RGB = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
STD_RGB = np.array([0.2023, 0.1994, 0.2010], dtype=np.float32)
CALIBRATION_N = 1000  # of the 9,000 non-twin JPEGs; the other 8,000 are the train split


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int = 4, dim: int = 128) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, patches, dim)


class ViT(nn.Module):
    """Module names match the checkpoint (``patch_embed.proj``, ``transformer.layers.i``, ``mlp_head``)."""

    def __init__(
        self,
        num_classes: int = 10,
        image_size: int = 32,
        patch_size: int = 4,
        dim: int = 128,
        depth: int = 6,
        heads: int = 8,
        mlp_dim: int = 256,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        patches = (image_size // patch_size) ** 2
        self.patch_embed = PatchEmbed(patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, patches + 1, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        layer = nn.TransformerEncoderLayer(
            d_model=dim, nhead=heads, dim_feedforward=mlp_dim, batch_first=True
        )
        # enable_nested_tensor=False: the fast path changes nothing at inference without padding
        # masks, and keeping it off avoids its warning and keeps export and eval on one code path.
        self.transformer = nn.TransformerEncoder(layer, num_layers=depth, enable_nested_tensor=False)
        self.mlp_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.pos_embed
        return self.mlp_head(self.transformer(tokens)[:, 0])


def build(num_classes: int = 10, **sizes) -> ViT:
    """The architecture with random weights (a ``python:`` model source); ``sizes`` (image_size,
    patch_size, dim, depth, heads, mlp_dim) make other sizes, e.g. a tiny one for tests."""
    return ViT(num_classes=num_classes, **sizes)


def pretrained(weights: str | Path) -> ViT:
    """The architecture with the shared CIFAR-10 weights, loaded strictly (every key, every shape)."""
    model = build()
    state = torch.load(Path(weights), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def exact_1000(data_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 test images 0-999 (exact pixels), normalised NCHW float32, and their labels."""
    images, labels, _ = cifar_data.load_exact_1000(data_dir)
    return cifar_data.preprocess(images, MEAN_RGB, STD_RGB), labels


def prepare(data_dir: str | Path, out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """The files eval/vit.yaml reads: cifar_data's disjoint npz splits (held-out = the exact 1,000,
    drift = their JPEG twins, calibration and train = the other 9,000 JPEGs) and a checked copy of
    the weights (local use only: the weights have no licence to redistribute)."""
    source = Path(data_dir) / WEIGHTS
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != WEIGHTS_SHA256:
        raise ValueError(f"{source} has sha256 {digest}, not the {WEIGHTS_SHA256} of PROVENANCE.md")
    paths = cifar_data.write_role_splits(data_dir, out_dir, calibration_n=CALIBRATION_N, seed=seed)
    paths["drift"] = Path(out_dir) / "jpeg_twins.npz"
    paths["weights"] = Path(out_dir) / source.name
    shutil.copyfile(source, paths["weights"])
    return paths


@torch.no_grad()
def top1(model: nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 100) -> float:
    model.eval()
    preds = [model(torch.from_numpy(images[i:i + batch_size])).argmax(-1).numpy()
             for i in range(0, len(images), batch_size)]
    return float((np.concatenate(preds) == labels).mean())


def export_onnx(model: nn.Module, path: str | Path, opset: int = 17) -> Path:
    """Legacy (TorchScript) exporter, dynamic batch axis; input ``pixel_values``, output ``logits``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    example = torch.zeros(2, 3, 32, 32)
    torch.onnx.export(
        model, (example,), str(path), input_names=["pixel_values"], output_names=["logits"],
        dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=opset, dynamo=False,
    )
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Top-1 of the CIFAR-10 ViT on test images 0-999")
    p.add_argument("--data", type=Path, default=None, help="shared data dir (or $COMPRESS_SHARED_DATA)")
    p.add_argument("--onnx", type=Path, default=None, help="also export here and compare with ORT")
    p.add_argument("--prepare", type=Path, default=None, metavar="OUT",
                   help="write eval/vit.yaml's npz splits and weights to OUT instead")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    data = cifar_data.shared_data_dir(args.data, needs=NEEDS)
    if args.prepare:
        for role, path in prepare(data, args.prepare).items():
            print(f"{role}: {path}")
        return 0
    torch.set_num_threads(args.threads)
    model = pretrained(data / WEIGHTS)
    images, labels = exact_1000(data)
    print(f"params {sum(p.numel() for p in model.parameters()):,}")
    print(f"torch top-1 on exact images 0-999: {top1(model, images, labels):.1%}")
    if args.onnx:
        import onnxruntime as ort

        export_onnx(model, args.onnx)
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(str(args.onnx), options, providers=["CPUExecutionProvider"])
        with torch.no_grad():
            ref = model(torch.from_numpy(images)).numpy()
        got = np.concatenate([session.run(None, {"pixel_values": images[i:i + 100]})[0]
                              for i in range(0, len(images), 100)])
        print(f"ORT top-1: {(got.argmax(-1) == labels).mean():.1%}, max |ORT - torch| logit "
              f"{np.abs(got - ref).max():.2e}, argmax agreement {(got.argmax(-1) == ref.argmax(-1)).mean():.1%}")
        for line in check_quant_pre_process(args.onnx):
            print(line)
    return 0


def check_quant_pre_process(onnx_path: Path) -> list[str]:
    """What ORT's ``quant_pre_process`` does on this export, with and without symbolic shapes."""
    from collections import Counter

    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization.shape_inference import quant_pre_process

    ops = Counter(node.op_type for node in onnx.load(str(onnx_path)).graph.node)
    lines = [f"export: {sum(ops.values())} nodes, " + ", ".join(
        f"{ops[op]} {op}" for op in ("Reshape", "Shape", "Concat", "MatMul", "Softmax"))]
    x = np.random.default_rng(0).normal(size=(4, 3, 32, 32)).astype(np.float32)
    (ref,) = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"pixel_values": x})
    for skip in (False, True):
        out = onnx_path.with_suffix(f".pre{'-skip' if skip else ''}.onnx")
        try:
            quant_pre_process(str(onnx_path), str(out), skip_symbolic_shape=skip)
        except Exception as err:  # reported, not hidden: this is what the check is for
            where = err.__traceback__
            while where.tb_next:
                where = where.tb_next
            lines.append(f"quant_pre_process(skip_symbolic_shape={skip}): {type(err).__name__} "
                         f"in {where.tb_frame.f_code.co_name} (line {where.tb_lineno})")
            continue
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        (got,) = session.run(None, {"pixel_values": x})
        nodes = len(onnx.load(str(out)).graph.node)
        lines.append(f"quant_pre_process(skip_symbolic_shape={skip}): ok -> {out.name}, {nodes} nodes, "
                     f"max |pre-processed - export| logit {np.abs(got - ref).max():.1e} on random inputs")
    return lines


if __name__ == "__main__":
    sys.exit(main())
