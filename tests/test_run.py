"""`timm-mobileformer run`: a stand-in script sees the models, its arguments and `__name__ == '__main__'`,
under plain Python and under torchrun; and inside `run`, CPU DistributedDataParallel takes train.py's
`device_ids=[device]`."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from cli_util import error_line
from torch.nn.parallel import DistributedDataParallel

from timm_mobileformer.cli import main
from timm_mobileformer.run import CpuFriendlyDistributedDataParallel

SCRIPT_ARGS = ['--data-dir', 'some dir', '-b', '4', '--flag', 'positional']

# what the stand-in reports, one JSON file per process; under torchrun it also wraps a model the way
# timm's train.py does: DistributedDataParallel(model, device_ids=[device]) on a CPU device
STAND_IN = '''
import json, os, sys
import timm
import torch

report = dict(
    name=__name__,
    argv=sys.argv,
    has_model=timm.is_model('mobileformer_26m'),
    path0=sys.path[0],
    rank=int(os.environ.get('RANK', 0)),
)
if 'RANK' in os.environ:
    torch.distributed.init_process_group('gloo')
    from torch.nn.parallel import DistributedDataParallel
    model = DistributedDataParallel(torch.nn.Linear(2, 2), device_ids=[torch.device('cpu')])
    model(torch.ones(1, 2)).sum().backward()
    report['ddp_grad'] = model.module.weight.grad.tolist()
    torch.distributed.destroy_process_group()
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"report_{report['rank']}.json")
with open(out, 'w') as f:
    json.dump(report, f)
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture
def stand_in(tmp_path: Path) -> Path:
    script = tmp_path / 'scripts' / 'stand_in.py'
    script.parent.mkdir()
    script.write_text(STAND_IN)
    return script


def launch(prefix: list[str], script: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS='1')
    cmd = [*prefix, '-m', 'timm_mobileformer', 'run', str(script), *SCRIPT_ARGS]
    subprocess.run(cmd, check=True, env=env, cwd=script.parent.parent, timeout=240)


def read_report(script: Path, rank: int) -> dict:
    return json.loads((script.parent / f'report_{rank}.json').read_text())


def check_report(report: dict, script: Path) -> None:
    assert report['name'] == '__main__'
    assert report['argv'] == [str(script), *SCRIPT_ARGS]
    assert report['has_model'] is True
    assert report['path0'] == str(script.parent)


def test_run_plain_python(stand_in: Path):
    launch([sys.executable], stand_in)
    check_report(read_report(stand_in, 0), stand_in)


def test_run_under_torchrun(stand_in: Path):
    torchrun = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
                '--master_addr', '127.0.0.1', '--master_port', str(free_port())]
    launch(torchrun, stand_in)
    reports = [read_report(stand_in, rank) for rank in (0, 1)]
    for report in reports:
        check_report(report, stand_in)
    assert reports[0]['ddp_grad'] == reports[1]['ddp_grad']


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """`run` in this process sets sys.argv, sys.path and torch's DDP name: put them back afterwards."""
    monkeypatch.setattr(sys, 'argv', list(sys.argv))
    monkeypatch.setattr(sys, 'path', list(sys.path))
    monkeypatch.setattr(torch.nn.parallel, 'DistributedDataParallel', torch.nn.parallel.DistributedDataParallel)


def test_run_passes_the_exit_status(tmp_path: Path, in_process: None):
    script = tmp_path / 'fails.py'
    script.write_text('import sys\nsys.exit(3)\n')
    with pytest.raises(SystemExit) as exc:
        main(['run', str(script)])
    assert exc.value.code == 3


def test_run_missing_script(tmp_path: Path, in_process: None):
    assert 'no such script' in error_line(['run', str(tmp_path / 'missing.py')])


@pytest.fixture
def one_process_group(tmp_path: Path):
    torch.distributed.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0, world_size=1)
    yield
    torch.distributed.destroy_process_group()


def test_plain_ddp_rejects_cpu_device_ids(one_process_group: None):
    """Why `run` swaps DDP: torch refuses train.py's `device_ids=[device]` for a CPU module."""
    with pytest.raises(ValueError, match='device_ids'):
        DistributedDataParallel(nn.Linear(2, 2), device_ids=[torch.device('cpu')])


@pytest.mark.parametrize('device_ids', [None, [torch.device('cpu')], ['cpu']])
def test_cpu_ddp_accepts_train_py_device_ids(device_ids, one_process_group: None):
    ddp = CpuFriendlyDistributedDataParallel(nn.Linear(2, 2), device_ids=device_ids)
    assert ddp.device_ids is None
    ddp(torch.ones(1, 2)).sum().backward()
