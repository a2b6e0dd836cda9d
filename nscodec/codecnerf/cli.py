"""``nscodec codecnerf-pretrain`` argument parsing, kept free of heavy imports (torch / nerfstudio load only when
the command runs, so other ``nscodec`` subcommands stay fast)."""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from nscodec.codecnerf.pretrain import pretrain_command

    return pretrain_command(args)


def add_subparser(subparsers: "argparse._SubParsersAction") -> None:
    """Register ``nscodec codecnerf-pretrain``."""
    p = subparsers.add_parser("codecnerf-pretrain", help="pretrain the shared CodecNeRF codec over a corpus → codec-model file")
    p.add_argument("--corpus", required=True, help="directory of Blender-format scenes (or one scene)")
    p.add_argument("--generate", type=int, default=0, metavar="N", help="first write N procedural scenes into --corpus")
    p.add_argument("--resolution", type=int, default=64, help="image size of generated scenes")
    p.add_argument("--n-train", type=int, default=24, help="training views per generated scene")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", required=True, help="codec-model file to write (e.g. codecnerf.cnm)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget (stops at steps or minutes)")
    p.add_argument("--rays", type=int, default=1024)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--image-size", type=int, default=None, help="resize corpus images to this size")
    p.add_argument("--lpips-weight", type=float, default=0.0, help="LPIPS on a patch (only if LPIPS weights are local)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--resume", default=None, metavar="CODEC_MODEL", help="continue pretraining from this codec-model file")
    p.add_argument("--backbone-weights", default=None, metavar="PTH",
                   help="local ViT weights (DINO or torchvision layout): a frozen ViT replaces the small feature CNN")
    p.add_argument("--backbone-heads", type=int, default=None, help="attention heads of that ViT if its width does not imply them")
    p.add_argument("--enc-image-size", type=int, default=None,
                   help="encoder input size in pixels (default 64; with a ViT, a multiple of its patch size)")
    p.set_defaults(func=_run)
