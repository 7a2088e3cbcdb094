"""Convert a teacher checkpoint (timm, OpenAI CLIP, open_clip, HF, DINOv2, C-RADIO) to plain safetensors.

The output is the state_dict that ``pretrained_teacher_model_path`` expects.

With ``--model``, the weights are mapped onto that registry model, checked strictly (the same check as
training), and saved in its own naming; without it, the file is only unwrapped and re-saved. C-RADIO's
TorchHub ``.pth.tar`` pickles an ``argparse.Namespace``: it is read only with ``--trust-pickle``, which
allows that one class (and, failing that, full unpickling, for files the user vouches for).
"""

import argparse
import os
import pickle
import sys
from typing import Dict, List, Optional

import torch
from safetensors.torch import save_file

from radio.errors import CheckpointError, RadioError
from radio.models.checkpoint_io import LoadReport, compare, read_state_dict, unwrap_state_dict
from radio.models.cradio import RadioViT
from radio.models.formats import detect_format, to_model_layout
from radio.models.registry import create_model, get_model_info


def _read_trusted(path: str) -> Dict[str, torch.Tensor]:
    """Like ``read_state_dict`` but admits the pickled objects C-RADIO's TorchHub checkpoints carry."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        print(
            f"restricted unpickling refused ({str(e).splitlines()[0]}); --trust-pickle: loading fully", file=sys.stderr
        )
        obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, dict):  # the tensors only: the pickled objects go no further
        obj = {k: v for k, v in obj.items() if isinstance(v, (dict, torch.Tensor))}
    return unwrap_state_dict(obj, path)


def convert(
    src: str,
    dst: str,
    model_name: Optional[str] = None,
    *,
    trust_pickle: bool = False,
    input_size: Optional[int] = None,
) -> LoadReport:
    """Convert ``src`` to ``dst`` (.safetensors); with ``model_name`` map and check it strictly."""
    if not dst.endswith(".safetensors"):
        raise CheckpointError(f"output must be a .safetensors file: {dst}")
    model = None
    if model_name is not None:
        info = get_model_info(model_name)
        model = create_model(model_name, img_size=input_size or info.img_size)
    state = _read_trusted(src) if trust_pickle else read_state_dict(src)
    report = LoadReport(path=src, fmt=detect_format(state))
    if model is not None:
        state, report = to_model_layout(state, model, path=src, role="teacher")
        compare(state, model, report)
        if not report.ok:
            raise CheckpointError(f"{report.describe()}\nThe checkpoint does not match {model_name}.")
        if isinstance(model, RadioViT):
            state["summary_idxs"] = torch.tensor(model.summary_idxs)
    save_file(
        {k: v.contiguous().clone() for k, v in state.items()},
        dst,
        metadata={"source": os.path.basename(src), "layout": report.fmt, "model": model_name or ""},
    )
    return report


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="input checkpoint (.safetensors, .pth, .pt, .pth.tar, .bin)")
    parser.add_argument("dst", help="output .safetensors")
    parser.add_argument("--model", help="registry name to map onto and check against (see `radio models`)")
    parser.add_argument("--input-size", type=int, help="resolution to resample position embeddings to")
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="read a pickle that holds Python objects (C-RADIO TorchHub .pth.tar); only for "
        "files from a source you trust",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        report = convert(args.src, args.dst, args.model, trust_pickle=args.trust_pickle, input_size=args.input_size)
    except RadioError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.describe())
    print(f"wrote {args.dst}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run(build_parser().parse_args(argv))
