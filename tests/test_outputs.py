"""Outputs are written staged: a failure, a fault or a signal mid-run keeps the old output and leaves nothing
half-written (timm_mobileformer/outputs.py, and each command that writes through it)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pytest
from cli_util import error_line, folder_state

from timm_mobileformer.outputs import STAGING_MARK, staged

REPO_ROOT = Path(__file__).parent.parent

# commands that run long enough to be stopped once their staging name appears
STOPPABLE_RUNS = {
    'convert': lambda files, work: ['convert', str(files['mf26']), '--out', str(work / 'new' / 'out')],
    'export': lambda files, work: ['export', '--model', '26m', '--out', str(work / 'new' / 'm.pt2'), '--img-size',
                                   '64'],
    'demo-data': lambda files, work: ['demo-data', str(work / 'new' / 'd'), '--train-per-class', '5000',
                                      '--img-size', '32'],
}
SIGNALS = {'SIGTERM': signal.SIGTERM, 'SIGINT': signal.SIGINT}
EXIT_STATUS = {name: 128 + sig for name, sig in SIGNALS.items()}  # what a shell reports for a signal's end


class StoppedRun(NamedTuple):
    work: Path  # the folder it ran in; the output went to work/new
    returncode: int
    stderr: str


def staging_names(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if STAGING_MARK in p.name]


def default_sigint() -> None:
    """The command as a user's shell starts it: a suite run in the background (a non-interactive `cmd &`)
    ignores SIGINT, and its children would inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_command(argv: list[str], work: Path) -> subprocess.Popen:
    """The real command, as a user starts it, in `work`."""
    env = dict(os.environ, OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get('PYTHONPATH', '')]))
    return subprocess.Popen([sys.executable, '-m', 'timm_mobileformer', *argv], cwd=work, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)


def stop_each_when_staging(runs: dict[tuple[str, str], tuple[subprocess.Popen, Path]]) -> dict[tuple[str, str], str]:
    """Send each run its signal as soon as a staging name appears under its work/new; the runs that finished
    or stalled before that → why."""
    waiting, missed = dict(runs), {}
    deadline = time.monotonic() + 180
    while waiting:
        for key, (proc, work) in list(waiting.items()):
            if (work / 'new').exists() and staging_names(work / 'new'):
                proc.send_signal(SIGNALS[key[1]])
                del waiting[key]
            elif proc.poll() is not None or time.monotonic() > deadline:
                missed[key] = 'finished before it could be stopped' if proc.poll() is not None else 'no staging name'
                del waiting[key]
        time.sleep(0.01)
    return missed


@pytest.fixture(scope='module')
def user_files_before(user_files) -> dict[str, str]:
    """The user's files as they were before any command of this module ran."""
    return folder_state(user_files['folder'])


@pytest.fixture(scope='module')
def stopped_runs(user_files, user_files_before, tmp_path_factory) -> dict[tuple[str, str], StoppedRun]:
    """(command, signal name) → how the command ended when stopped mid-run by that signal. All six start at
    once, so that their start-up (mostly imports) overlaps; after `user_files_before` was taken."""
    runs = {}
    for command, argv in STOPPABLE_RUNS.items():
        for name in SIGNALS:
            work = tmp_path_factory.mktemp(f'{command}-{name}') / 'work'
            work.mkdir()
            runs[command, name] = start_command(argv(user_files, work), work), work
    try:
        missed = stop_each_when_staging(runs)
        ended = {key: (work, proc.communicate(timeout=120)[1]) for key, (proc, work) in runs.items()}
    finally:
        for proc, _ in runs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return {key: StoppedRun(work, runs[key][0].returncode, '\n'.join(filter(None, (missed.get(key), err))))
            for key, (work, err) in ended.items()}


@pytest.mark.parametrize('sig', list(SIGNALS))
@pytest.mark.parametrize('command', list(STOPPABLE_RUNS))
def test_signal_mid_run_leaves_nothing(command, sig, stopped_runs, user_files, user_files_before):
    run = stopped_runs[command, sig]
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == EXIT_STATUS[sig], run.stderr
    assert len(lines) == 1 and 'Traceback' not in run.stderr, run.stderr
    assert lines[0].startswith(f'timm-mobileformer {command}: error: '), run.stderr
    assert 'removed what was half-written' in lines[0], run.stderr
    assert list(run.work.iterdir()) == []  # neither the output, nor its staging name, nor the folder it created
    assert folder_state(user_files['folder']) == user_files_before


def make_old_output(folder: Path, kind: str) -> Path:
    """An existing output of the kind: a file, or a folder holding one."""
    if kind == 'file':
        (folder / 'old.txt').write_text('old')
        return folder / 'old.txt'
    (folder / 'old').mkdir()
    (folder / 'old' / 'keep.txt').write_text('old')
    return folder / 'old'


@pytest.mark.parametrize('kind', ['file', 'dir'])
@pytest.mark.parametrize('fault', [RuntimeError, KeyboardInterrupt])
def test_failed_overwrite_keeps_the_old_output(tmp_path, kind, fault):
    out = make_old_output(tmp_path, kind)
    before = folder_state(tmp_path)
    with pytest.raises(fault), staged(out, kind, overwrite=True) as stage:
        (stage / 'new.txt' if kind == 'dir' else stage).write_text('half')
        raise fault()
    assert folder_state(tmp_path) == before


@pytest.mark.parametrize('fault', [RuntimeError, KeyboardInterrupt])
def test_failed_write_removes_the_parents_it_created(tmp_path, fault):
    with pytest.raises(fault), staged(tmp_path / 'a' / 'b' / 'new.txt', 'file') as stage:
        stage.write_text('half')
        raise fault()
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_a_folder_whole(tmp_path):
    out = make_old_output(tmp_path, 'dir')
    with staged(out, 'dir', overwrite=True) as stage:
        (stage / 'new.txt').write_text('new')
    assert [p.name for p in tmp_path.iterdir()] == ['old'] and [p.name for p in out.iterdir()] == ['new.txt']


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes anywhere; the /proc cases of test_cli.py cover this')
def test_read_only_folder_is_refused_before_work(user_files, tmp_path):
    locked = tmp_path / 'locked'
    locked.mkdir()
    locked.chmod(0o555)
    try:
        message = error_line(['convert', str(user_files['mf26']), '--out', str(locked / 'out')])
        assert 'cannot write in' in message and list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)
