"""`timm-mobileformer run SCRIPT [ARGS...]`: register the models, then run SCRIPT as `__main__`."""
import argparse

from ..run import allow_cpu_device_ids, run_script

COMMAND = 'run'
HELP = ("Register the Mobile-Former models, then run a script (timm's train.py, validate.py, benchmark.py, "
        'inference.py: see fetch-scripts) as __main__ with the arguments that follow it.')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('script', metavar='SCRIPT', help='Python script to run, e.g. scripts/validate.py')
    parser.add_argument('script_args', nargs=argparse.REMAINDER, metavar='ARGS',
                        help='arguments for the script, passed on unchanged')


def run(args: argparse.Namespace) -> int:
    allow_cpu_device_ids()
    run_script(args.script, args.script_args)
    return 0
