"""The results file of a benchmark script (`--out FILE.json`): refused before any work where it exists (unless
`--overwrite`) or cannot be written, and written staged, so a run that fails leaves nothing half-written."""
import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from timm_mobileformer.errors import MobileFormerError, one_line
from timm_mobileformer.outputs import check_output, staged


def add_out_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--out', type=Path, required=True, help='the results file (.json)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing results file')


def check_out(path: Path, overwrite: bool) -> Path:
    return check_output(path, suffixes=('.json',), overwrite=overwrite)


def write_results(path: Path, results: dict, overwrite: bool) -> None:
    with staged(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(results, indent=2) + '\n')
    print(f'wrote {path}')


def run(main: Callable[[list[str]], None]) -> None:
    """`main(sys.argv[1:])`, a refused request as one line."""
    try:
        main(sys.argv[1:])
    except MobileFormerError as err:
        sys.exit(f'error: {one_line(err)}')
