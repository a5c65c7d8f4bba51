"""Fetch timm's own tests/test_models.py from the timm source distribution that matches the installed timm.

timm's test code is not ours to commit: this places it at tests/timm_suite/test_models.py (git-ignored), where
pytest collects it (conftest.py keeps only the mobileformer_* cases) and tests/test_timm_contract.py calls
the contract tests timm runs only for its own modules. Needs the package registry (pip download).
"""
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import version
from pathlib import Path

DEST = Path(__file__).parent / 'timm_suite'
WANTED = ('tests/test_models.py',)


def fetch(dest: Path = DEST) -> Path:
    timm_version = version('timm')
    stamp = dest / 'VERSION'
    if stamp.exists() and stamp.read_text() == timm_version and all((dest / Path(w).name).exists() for w in WANTED):
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, '-m', 'pip', 'download', '--quiet', '--no-deps', '--no-binary', ':all:',
             '--dest', tmp, f'timm=={timm_version}'],
            check=True,
        )
        sdist = next(Path(tmp).glob('timm-*.tar.gz'))
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(sdist) as tar:
            for wanted in WANTED:
                member = tar.getmember(f'timm-{timm_version}/{wanted}')
                (dest / Path(wanted).name).write_bytes(tar.extractfile(member).read())
    stamp.write_text(timm_version)
    return dest


if __name__ == '__main__':
    print(f'timm {version("timm")} tests in {fetch()}')
