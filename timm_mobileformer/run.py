"""`timm-mobileformer run SCRIPT [ARGS...]`: register the Mobile-Former models, then run SCRIPT as `__main__`.

timm has no plugin discovery, and only its train.py can import a module before building the model
(`--device-modules`); validate.py, benchmark.py, inference.py and any other script say `Unknown model`.
This launcher imports the package (which registers the models), sets `sys.argv` and `sys.path[0]` as
`python SCRIPT ARGS...` would, and runs the script with runpy. It works under torchrun too:

    torchrun --nproc_per_node 2 -m timm_mobileformer run train.py --device cpu ...

It also makes data-parallel training on CPU work: timm's train.py wraps the model with
`DistributedDataParallel(model, device_ids=[device])`, which torch rejects for a CPU module ("device_ids ...
only work with ... GPU modules or CPU modules" ValueError). `allow_cpu_device_ids` swaps in a DDP subclass
that drops `device_ids` / `output_device` for CPU modules, the only values torch accepts there (both mean
"the module's own device"); GPU modules are wrapped exactly as before.
"""
import logging
import os
import runpy
import sys
from typing import Any, Optional

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from . import mobileformer  # noqa: F401  (registers the models)
from .errors import MobileFormerError

_logger = logging.getLogger(__name__)


def _on_cpu(module: nn.Module) -> bool:
    devices = {p.device.type for p in module.parameters()}
    return devices == {'cpu'}


class CpuFriendlyDistributedDataParallel(DistributedDataParallel):
    """DistributedDataParallel that ignores `device_ids` and `output_device` when the module lives on CPU."""

    def __init__(self, module: nn.Module, device_ids: Optional[list[Any]] = None, output_device: Any = None,
                 *args: Any, **kwargs: Any):
        if (device_ids or output_device is not None) and _on_cpu(module):
            _logger.info('CPU module: dropping DistributedDataParallel device_ids=%s, output_device=%s',
                         device_ids, output_device)
            device_ids, output_device = None, None
        super().__init__(module, device_ids, output_device, *args, **kwargs)


def allow_cpu_device_ids() -> None:
    """Make `torch.nn.parallel.DistributedDataParallel` (as train.py / timm.task look it up) CPU-tolerant."""
    torch.nn.parallel.DistributedDataParallel = CpuFriendlyDistributedDataParallel


def run_script(script: str, script_args: list[str]) -> None:
    """Run `script` as `python script *script_args` would, in this interpreter (models already registered)."""
    if not os.path.isfile(script):
        raise MobileFormerError(f'{script}: no such script: check the path (timm-mobileformer fetch-scripts DIR '
                                f"fetches timm's train.py, validate.py, benchmark.py and inference.py)")
    sys.argv = [script, *script_args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name='__main__')
