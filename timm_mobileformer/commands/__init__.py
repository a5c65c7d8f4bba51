"""The `timm-mobileformer` subcommands: one thin module each (arguments, then library calls).

Each module provides `COMMAND`, `HELP`, `add_arguments(parser)` and `run(args) -> int`; cli.py imports them
explicitly. Library modules never import from here.
"""
