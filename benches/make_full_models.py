"""Full-size FFHQ model files with random weights, in the official formats, for
`clipshape bench --full-edit` (the real files cannot be downloaded where CI runs).

    python3 benches/make_full_models.py DIR

reads DIR/spec.json, written by the bench: for each file, every tensor's key, shape, mean and
std (taken from libclipshape's own random initialisation, so the numbers stay sane), and writes

* DIR/e4e_ffhq_encode.pt: omertov/encoder4editing's layout, `torch.save` of
  {'state_dict': {'encoder.*', 'decoder.*'}, 'latent_avg', 'opts'} (zip format, 1.2 GB);
* DIR/ViT-B-32.pt: a TorchScript archive with openai/CLIP's parameter names, their dtypes
  (fp16 for convolutions, linear layers, attention and projections, fp32 for the rest, as
  `clip.model.convert_weights` leaves them) and the root's int64 scalars.

Only the parameters matter to the loader; the archive's `forward` is the identity.
"""

import json
import os
import sys
from collections import OrderedDict

import torch
from torch import nn

HALF_SUFFIXES = ("conv1.weight", "in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias",
                 "c_fc.weight", "c_fc.bias", "c_proj.weight", "c_proj.bias")
HALF_KEYS = ("visual.proj", "text_projection")


def tensors(entries, seed):
    gen = torch.Generator().manual_seed(seed)
    out = OrderedDict()
    for key, shape, mean, std in entries:
        if std > 0:
            out[key] = torch.randn(shape, generator=gen) * std + mean
        else:
            out[key] = torch.full(shape, float(mean))
    return out


class Node(nn.Module):
    pass


class Root(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def clip_archive(state, path):
    root = Root()
    for key, value in state.items():
        *parents, name = key.split(".")
        module = root
        for p in parents:
            if not hasattr(module, p):
                module.add_module(p, Node())
            module = getattr(module, p)
        half = key.endswith(HALF_SUFFIXES) or key in HALF_KEYS
        module.register_parameter(name, nn.Parameter(value.half() if half else value, requires_grad=False))
    for name, v in (("input_resolution", 224), ("context_length", 77), ("vocab_size", 49408)):
        root.register_buffer(name, torch.tensor(v))
    torch.jit.save(torch.jit.script(root), path)


def main():
    out = sys.argv[1]
    with open(os.path.join(out, "spec.json")) as f:
        spec = json.load(f)
    e4e = tensors(spec["e4e"], 1)
    latent_avg = e4e.pop("latent_avg")
    opts = {"dataset_type": "ffhq_encode", "encoder_type": "Encoder4Editing", "stylegan_size": 1024,
            "start_from_latent_avg": True, "checkpoint_path": None}
    tmp = os.path.join(out, "e4e_ffhq_encode.pt.part")
    torch.save({"state_dict": e4e, "latent_avg": latent_avg, "opts": opts}, tmp)
    os.replace(tmp, os.path.join(out, "e4e_ffhq_encode.pt"))
    tmp = os.path.join(out, "ViT-B-32.pt.part")
    clip_archive(tensors(spec["clip"], 2), tmp)
    os.replace(tmp, os.path.join(out, "ViT-B-32.pt"))


if __name__ == "__main__":
    main()
