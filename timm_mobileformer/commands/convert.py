"""`timm-mobileformer convert`: an authors' checkpoint in, a Hub-ready folder out."""
import argparse

from ..convert import check_repo_id, convert, push_folder
from ..hub import hub_id
from ..outputs import check_output
from ._common import add_model_argument, add_output_argument

COMMAND = 'convert'
HELP = "Convert an authors' Mobile-Former checkpoint into a Hub-ready folder (safetensors, config, model card)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('checkpoint', metavar='CHECKPOINT',
                        help="the authors' mobile-former-<v>.pth.tar (or a converted model.safetensors)")
    add_output_argument(parser, 'DIR', 'folder to create (it must not exist, or be empty, unless --overwrite)')
    add_model_argument(parser, help='Mobile-Former variant, e.g. 294m or mobileformer_294m (default: detected '
                                    'from the tensors)')
    parser.add_argument('--no-ema', dest='use_ema', action='store_false',
                        help='with a checkpoint that holds EMA weights, convert the plain weights instead '
                             '(default: the EMA weights, as timm does)')
    parser.add_argument('--push-to-hub', metavar='REPO', help='after writing, upload the folder to this Hub repo, '
                        f"e.g. {hub_id('mobileformer_294m')} (read RELEASING.md first) (default: no upload)")


def run(args: argparse.Namespace) -> int:
    repo_id = check_repo_id(args.push_to_hub) if args.push_to_hub else None
    check_output(args.out, kind='dir', inputs=[args.checkpoint], overwrite=args.overwrite)
    out = convert(args.checkpoint, args.out, args.model, repo_id=repo_id, log=print, overwrite=args.overwrite,
                  use_ema=args.use_ema)
    if repo_id:
        push_folder(out, repo_id, log=print)
    return 0
