"""Reading torch pickles safely: `torch.load(weights_only=True)`, plus the few harmless globals that real
training checkpoints carry.

A timm `train.py` checkpoint stores its arguments as an `argparse.Namespace`, and numpy scalars can appear
in its metrics. Those are allowed through `torch.serialization.safe_globals`; anything else a pickle asks
for (os, posix, subprocess, builtins eval/exec, ...) is refused, and the file is reported as unsafe, with
no advice to unpickle it some other way.
"""
import argparse
import pickle
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .errors import CheckpointError

__all__ = ['CHECKPOINT_GLOBALS', 'allow_checkpoint_globals', 'refused_global']


def _numpy_globals() -> list[object]:
    """numpy scalars and dtypes, under numpy 2's names and the numpy 1 names older pickles use."""
    scalar = np._core.multiarray.scalar if hasattr(np, '_core') else np.core.multiarray.scalar
    dtypes = [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith('DType')]
    return [scalar, (scalar, 'numpy.core.multiarray.scalar'), np.dtype, *dtypes]


CHECKPOINT_GLOBALS: list[object] = [argparse.Namespace, *_numpy_globals()]

# torch names the refused global as 'GLOBAL posix.system'; timm's loader re-raises as 'Unsupported globals: ...'
_REFUSED_GLOBAL = re.compile(r'(?:GLOBAL|Unsupported globals:) ([\w.]+)')


@contextmanager
def allow_checkpoint_globals(source: Optional[object] = None) -> Iterator[None]:
    """Within the block, `torch.load(weights_only=True)` also accepts CHECKPOINT_GLOBALS, and a pickle that
    needs any other global becomes a CheckpointError naming `source` (the file), with no unsafe advice."""
    try:
        with torch.serialization.safe_globals(CHECKPOINT_GLOBALS):
            yield
    except (RuntimeError, pickle.UnpicklingError) as err:
        blocked = refused_global(err)
        if blocked is None:
            raise
        raise CheckpointError(unsafe_message(Path(str(source or 'the checkpoint')), blocked)) from None


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
