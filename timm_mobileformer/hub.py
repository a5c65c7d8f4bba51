"""Where Mobile-Former's ImageNet weights live on the Hugging Face Hub, and what to do when they can't be reached.

The only ImageNet-1k weights are the authors' `mobile-former-<v>.pth.tar` files on Google Drive. The project
converts them (`timm-mobileformer convert`) into one Hub repo per variant, `<HUB_ORG>/mobileformer_<v>.in1k`,
holding `model.safetensors`, timm's `config.json` and a model card. See RELEASING.md for why they are not
published yet.

Nothing here imports the model file: the model file imports this one for its cfgs.
"""
import hashlib
import shutil
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Optional, Union
from urllib.parse import urlparse

from huggingface_hub import constants as hf_constants
from huggingface_hub import try_to_load_from_cache
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError
from safetensors import SafetensorError
from timm.models import resolve_pretrained_cfg

from .errors import CheckpointError, MobileFormerError, one_line

# The one place the Hub organisation is chosen (documented in RELEASING.md).
HUB_ORG = 'timm-mobileformer'
WEIGHTS_FILENAME = 'model.safetensors'
# Hub license id for the authors' weights: they were released without any license (all rights reserved).
WEIGHTS_LICENSE = 'unknown'

# The authors' ImageNet-1k checkpoints (github.com/AAboys/MobileFormer README), one per variant.
AUTHORS_CHECKPOINT_URLS: dict[str, str] = {
    'mobileformer_508m': 'https://drive.google.com/file/d/1bqLIcpbCaxK-Eb4wcxk0iJpFJ1nXfGuF/view?usp=sharing',
    'mobileformer_294m': 'https://drive.google.com/file/d/1JBSM7NJ60fN9TgT5sMnbhmbZwrzcBd0r/view?usp=sharing',
    'mobileformer_214m': 'https://drive.google.com/file/d/13MOjdIMMBJgqyq_ld-grRhBBHOFU5Ggd/view?usp=sharing',
    'mobileformer_151m': 'https://drive.google.com/file/d/1w4QO-zhJ8QI1zGu7iOZ7lXxYJ5G1VXdF/view?usp=sharing',
    'mobileformer_96m': 'https://drive.google.com/file/d/1kMbRceswujtliCHKr-nxMFsrkvBrEfrW/view?usp=sharing',
    'mobileformer_52m': 'https://drive.google.com/file/d/1ekq_FPl57gjIlYX16Ll0nBuEyB0pjgGt/view?usp=sharing',
    'mobileformer_26m': 'https://drive.google.com/file/d/15uWYzx2VWWUjacZQHB56vOHzKxQDlp5O/view?usp=sharing',
}


def hub_id(variant: str, tag: str = 'in1k') -> str:
    """The Hub repo of a variant's weights, e.g. 'timm-mobileformer/mobileformer_294m.in1k'."""
    return f'{HUB_ORG}/{variant}.{tag}'


def authors_filename(variant: str) -> str:
    """The authors' name for a variant's checkpoint, e.g. 'mobile-former-294m.pth.tar'."""
    return f"mobile-former-{variant.split('_', 1)[1]}.pth.tar"


class WeightsUnreachableError(MobileFormerError, RuntimeError):
    """Pretrained weights were asked for but the Hub could not deliver them.

    `variant`, `repo_id` and `reason` say which weights and why; `cli_message(option)` is the same advice for a
    command line, naming the command's own option for a local file instead of Python calls.
    """

    def __init__(self, message: str, variant: Optional[str] = None, repo_id: Optional[str] = None,
                 reason: str = ''):
        super().__init__(message)
        self.variant, self.repo_id, self.reason = variant, repo_id, reason

    def cli_message(self, option: str = '--checkpoint', fallback: Optional[str] = None) -> str:
        if self.variant is None:
            return str(self)
        authors_file = authors_filename(self.variant)
        url = AUTHORS_CHECKPOINT_URLS.get(self.variant, 'the Google Drive link in RELEASING.md')
        return (f'pretrained weights for {self.variant} could not be fetched from the Hugging Face Hub repo '
                f'{self.repo_id} ({self.reason}: offline, or the repo is not published yet): pass {option} '
                f"with the authors' {authors_file} ({url}), a folder made by timm-mobileformer convert or a "
                f'train.py checkpoint' + (f', or {fallback}' if fallback else ''))


def unreachable_message(variant: str, repo_id: Optional[str], reason: str) -> str:
    """One line: which Hub repo failed, and the two local ways to the same weights."""
    authors_file = authors_filename(variant)
    url = AUTHORS_CHECKPOINT_URLS.get(variant, 'the Google Drive link in RELEASING.md')
    return (
        f"Pretrained weights for {variant} could not be fetched from the Hugging Face Hub repo {repo_id} "
        f"({reason}: offline, or the repo is not published yet). Two ways out, with the authors' {authors_file} "
        f"({url}): convert it with `timm-mobileformer convert {authors_file} --out DIR` and load "
        f"timm.create_model('local-dir:DIR', pretrained=True), or pass the file directly with "
        f"timm.create_model('{variant}', pretrained=True, pretrained_cfg_overlay=dict(file='{authors_file}'))."
    )


# Whether the Hub answered a connection attempt in this process: None until tried. Once it failed, downloads
# go straight to the local cache, so a machine without network sees one clean error instead of ~23 s of
# retries (huggingface_hub retries connection errors five times with backoff).
_hub_reachable: Optional[bool] = None
PROBE_TIMEOUT_S = 3.0


def hub_reachable() -> bool:
    """One TCP connection to the Hub endpoint, name lookup included, given 3 s at most; remembered for the
    process."""
    global _hub_reachable
    if _hub_reachable is None:
        url = urlparse(hf_constants.ENDPOINT)
        address = (url.hostname or 'huggingface.co', url.port or (443 if url.scheme == 'https' else 80))
        answer: list = []

        def probe() -> None:
            try:
                socket.create_connection(address, timeout=PROBE_TIMEOUT_S).close()
                answer.append(True)
            except OSError:
                answer.append(False)

        thread = threading.Thread(target=probe, daemon=True)  # a stuck name lookup ignores socket timeouts
        thread.start()
        thread.join(PROBE_TIMEOUT_S)
        _hub_reachable = bool(answer and answer[0])
    return _hub_reachable


def _loads_from_hub(cfg: Any) -> bool:
    """Whether timm will fetch this cfg's weights from the Hub (its order: a state dict, a file, the Hub)."""
    return bool(cfg.hf_hub_id) and (cfg.source == 'hf-hub' or not (cfg.state_dict or cfg.file))


@contextmanager
def _offline() -> Iterator[None]:
    """huggingface_hub's offline mode for the block: the cache only, no connection attempts."""
    previous = hf_constants.HF_HUB_OFFLINE
    hf_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE = previous


@contextmanager
def explain_unreachable_weights(
        variant: str,
        pretrained: bool = False,
        pretrained_cfg: Optional[Union[str, dict[str, Any]]] = None,
        pretrained_cfg_overlay: Optional[dict[str, Any]] = None,
) -> Iterator[None]:
    """Build a model inside this block: Hub weights that can't be had become one WeightsUnreachableError.

    Takes the build's own arguments, to name the Hub repo. When the Hub can't be reached (one probe per
    process), the weights come from the local cache alone, and a missing one fails at once instead of after
    ~23 s of huggingface_hub's retries. A damaged cached file is a CheckpointError that names it.
    """
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg, pretrained_cfg_overlay)
    repo_id = cfg.hf_hub_id
    from_hub = pretrained and _loads_from_hub(cfg)
    cache_only = from_hub and not hf_constants.HF_HUB_OFFLINE and not hub_reachable()
    if cache_only and not isinstance(try_to_load_from_cache(repo_id, cfg.hf_hub_filename or WEIGHTS_FILENAME), str):
        reason = f'no connection to {urlparse(hf_constants.ENDPOINT).hostname}'
        raise WeightsUnreachableError(unreachable_message(variant, repo_id, reason), variant, repo_id, reason)
    try:
        with _offline() if cache_only else nullcontext():
            yield
    except SafetensorError as err:  # a damaged file in the Hub cache: say which, and how to get a fresh one
        cached = try_to_load_from_cache(repo_id, WEIGHTS_FILENAME) if repo_id else None
        where = cached if isinstance(cached, str) else f'the Hub cache of {repo_id}'
        raise CheckpointError(f'{where}: not a readable safetensors file ({one_line(err)}): the '
                              f'download is truncated or corrupt; delete it (hf cache delete) and load again') from None
    except (EntryNotFoundError, HfHubHTTPError, ConnectionError, OSError) as err:
        if not _is_hub_error(err):
            raise
        reason = type(err).__name__
        error = WeightsUnreachableError(unreachable_message(variant, repo_id, reason), variant, repo_id, reason)
        error.hub_error = err  # the original, for debugging
        raise error from None


def _is_hub_error(err: BaseException) -> bool:
    """huggingface_hub's and httpx's errors, not a local file's OSError."""
    if isinstance(err, (EntryNotFoundError, HfHubHTTPError, ConnectionError)):
        return True
    module = type(err).__module__ or ''
    return module.startswith(('huggingface_hub', 'httpx', 'httpcore', 'requests', 'urllib3'))


def install_in_hub_cache(
        folder: Union[str, Path],
        repo_id: str,
        cache_dir: Optional[Union[str, Path]] = None,
) -> Path:
    """Copy a converted folder into a Hugging Face cache as the `main` revision of repo_id; return the snapshot.

    With the cache in place, `pretrained=True` and `hf-hub:` load it without network access
    (`HF_HUB_OFFLINE=1`, and `HF_HUB_CACHE=cache_dir` if it is not the default cache). The cache layout is
    `models--<org>--<name>/refs/main` naming a revision and `snapshots/<revision>/<files>`.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    revision = _folder_revision(files)
    repo_dir = Path(cache_dir or hf_constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / 'snapshots' / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    for path in files:
        shutil.copyfile(path, snapshot / path.name)
    (repo_dir / 'refs').mkdir(exist_ok=True)
    (repo_dir / 'refs' / 'main').write_text(revision)
    return snapshot


def _folder_revision(files: Sequence[Path]) -> str:
    """A 40-hex revision id derived from the files' names and contents (same folder, same id)."""
    digest = hashlib.sha1()
    for path in files:
        digest.update(path.name.encode())
        with open(path, 'rb') as f:
            for chunk in iter(lambda: f.read(1 << 20), b''):
                digest.update(chunk)
    return digest.hexdigest()
