"""Reading torch pickles safely: `torch.load(weights_only=True)`, plus the few harmless globals that real
training checkpoints carry.

A timm `train.py` checkpoint stores its arguments as an `argparse.Namespace`, and numpy scalars can appear
in its metrics. Those are allowed through `torch.serialization.safe_globals`; anything else a pickle asks
for (os, posix, subprocess, builtins eval/exec, ...) is refused, and the file is reported as unsafe, with
no advice to unpickle it some other way.
"""
import argparse
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

import numpy as np
import torch

__all__ = ['CHECKPOINT_GLOBALS', 'allow_checkpoint_globals', 'refused_global']


def _numpy_globals() -> List[object]:
    """numpy scalars and dtypes, under numpy 2's names and the numpy 1 names older pickles use."""
    scalar = np._core.multiarray.scalar if hasattr(np, '_core') else np.core.multiarray.scalar
    dtypes = [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith('DType')]
    return [scalar, (scalar, 'numpy.core.multiarray.scalar'), np.dtype, *dtypes]


CHECKPOINT_GLOBALS: List[object] = [argparse.Namespace, *_numpy_globals()]

# torch names the refused global as 'GLOBAL posix.system'; timm's loader re-raises as 'Unsupported globals: ...'
_REFUSED_GLOBAL = re.compile(r'(?:GLOBAL|Unsupported globals:) ([\w.]+)')


@contextmanager
def allow_checkpoint_globals() -> Iterator[None]:
    """Within the block, `torch.load(weights_only=True)` also accepts CHECKPOINT_GLOBALS."""
    with torch.serialization.safe_globals(CHECKPOINT_GLOBALS):
        yield


def refused_global(err: BaseException) -> Optional[str]:
    """The global that `weights_only=True` refused to load (e.g. 'posix.system'), if that is what failed;
    looks through the chain of exceptions, since loaders re-raise torch's UnpicklingError."""
    while err is not None:
        found = _REFUSED_GLOBAL.findall(str(err))
        if found:
            return found[0]
        err = err.__cause__ or err.__context__
    return None


def unsafe_message(path: Path, blocked: str) -> str:
    """One line for a pickle that needs a global no checkpoint needs: refuse it, offer no way to unpickle it."""
    return (f'{path}: refused: unpickling it would call {blocked}, which no model checkpoint needs and which '
            f'can run code on this machine; it was not loaded. Ask its source for a .safetensors file or a '
            f'plain state dict')
