"""The ``weights`` command: list, verify and import the checkpoints deep extractors read."""

from __future__ import annotations

import argparse
from pathlib import Path

from featbank.cli.options import spec_list
from featbank.errors import FeatbankError, UsageError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add this family's subcommands, each with its handler as ``args.handler``."""
    p = sub.add_parser(
        "weights", help="list, verify and import the pretrained checkpoints deep extractors read",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="featbank never downloads weights. Each deep extractor names its checkpoint file, the\n"
                    "SHA-256 it must have (published upstream, or pinned here on import), its source and\n"
                    "licence. Files are looked up in --weights-dir ($FEATBANK_WEIGHTS), then in the\n"
                    "torch-hub and Hugging Face caches.",
        epilog="examples:\n"
               "  featbank weights list\n"
               "  featbank weights import ~/Downloads/SLOWFAST_8x8_R50.pyth --weights-dir ~/weights\n"
               "  featbank weights import ~/snapshots/one-align   # a snapshot folder (qalign): copied whole\n"
               "  featbank weights verify --extractor slowfast,timm:convnext_base --load\n"
               "  featbank weights verify --reference --extractor fastvqa,clip --reference-dir ~/reference-inputs")
    p.add_argument("action", choices=["list", "verify", "import"])
    p.add_argument("path", nargs="?", type=Path, help="with `import`: the checkpoint file (or snapshot folder) to import")
    p.add_argument("--extractor", type=spec_list, default=None,
                   help="extractors to consider (default: every registered one with weights; "
                        "timm backbones must be named, e.g. timm:convnext_base)")
    p.add_argument("--weights-dir", type=Path, default=None, help="default: $FEATBANK_WEIGHTS")
    p.add_argument("--load", action="store_true",
                   help="with `verify`: also check each checkpoint's parameter names and shapes against "
                        "the architecture (a strict load on the CPU; qalign checks its shard headers)")
    p.add_argument("--reference", action="store_true",
                   help="with `verify`: also run each verified checkpoint's published example (the authors' "
                        "input, e.g. FAST-VQA's demo video or CLIP.png) through featbank's model and compare "
                        "with the published number, within a stated tolerance")
    p.add_argument("--reference-dir", type=Path, action="append", default=None,
                   help="with --reference: a folder holding the examples' input files, or a clone of the "
                        "upstream repository; repeatable (default: the weights directory)")
    p.add_argument("--device", default="cpu", help="with --reference: torch device the examples run on")
    p.set_defaults(handler=_cmd_weights)


def _cmd_weights(args: argparse.Namespace) -> int:
    from featbank.extraction.weights import weights_dir
    from featbank.extraction.weights_admin import (
        import_checkpoint,
        list_weights,
        verify_weights,
    )

    directory = weights_dir(args.weights_dir)
    if (args.reference or args.reference_dir) and args.action != "verify":
        raise UsageError("--reference and --reference-dir go with `featbank weights verify`")
    if args.action == "list":
        print(list_weights(args.extractor, directory))
        return 0
    if args.action == "import":
        if args.path is None:
            raise FeatbankError("`featbank weights import` needs the checkpoint PATH")
        print(import_checkpoint(args.path, args.extractor, directory))
        return 0
    references = None
    if args.reference:
        references = args.reference_dir or ([directory] if directory else [])
    text, ok = verify_weights(args.extractor, directory, load=args.load, reference_dirs=references,
                              device=args.device)
    print(text)
    return 0 if ok else 4
