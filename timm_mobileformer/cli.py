"""`timm-mobileformer` / `python -m timm_mobileformer`: the package's command-line front door.

Each subcommand lives in its own module, which provides `COMMAND`, `HELP`, `add_arguments(parser)` and
`run(args) -> int`.
"""
import argparse
import importlib
import sys
from typing import List, Optional

SUBCOMMAND_MODULES = (
    'timm_mobileformer.info',
    'timm_mobileformer.convert',
    'timm_mobileformer.predict',
    'timm_mobileformer.attention',
    'timm_mobileformer.run',
    'timm_mobileformer.demo_data',
    'timm_mobileformer.bench',
    'timm_mobileformer.export',
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='timm-mobileformer',
        description='Mobile-Former image classifiers for timm.',
    )
    subparsers = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
    for module_name in SUBCOMMAND_MODULES:
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(module.COMMAND, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args) or 0


if __name__ == '__main__':
    sys.exit(main())
