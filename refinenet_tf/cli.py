"""The ``refinenet-tf`` command line: one entry point with subcommands.

Every subcommand is a function of parsed arguments; :func:`main` takes ``argv`` so tests call it directly.
Bad input ends with one line naming the argument or file and the fix, and exit status 2.
"""

import argparse
import os
import sys

__all__ = ["build_parser", "main"]


def _demo(args):
    from refinenet_tf import demo

    demo.run_demo(args.output, backbone=args.backbone, height=args.height, width=args.width, seed=args.seed)
    return 0


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def build_parser():
    """The argument parser of ``refinenet-tf`` (also the source of the README's CLI reference)."""
    from refinenet_tf import __version__, backbones

    parser = argparse.ArgumentParser(prog="refinenet-tf", description="RefineNet semantic segmentation "
                                     "for TensorFlow / Keras.")
    parser.add_argument("--version", action="version", version=f"refinenet_tf {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="segment a generated image with the slim RefineNet (no downloads)",
                               description="Build the slim RefineNet (random weights, nothing downloaded), "
                               "segment a generated scene and write input.png, prediction.png (VOC palette) "
                               "and overlay.png.")
    demo.add_argument("--output", default=os.path.join("checkpoints", "demo"),
                      help="folder for the PNGs (default: %(default)s)")
    demo.add_argument("--backbone", default="resnet101", choices=backbones.list_backbones(),
                      help="backbone (default: %(default)s)")
    demo.add_argument("--height", type=_positive_int, default=375, help="image height (default: %(default)s)")
    demo.add_argument("--width", type=_positive_int, default=500, help="image width (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the generated scene (default: %(default)s)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv=None):
    """Runs ``refinenet-tf`` with ``argv`` (default: ``sys.argv[1:]``) and returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError) as error:
        print(f"refinenet-tf {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
