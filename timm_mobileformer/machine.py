"""The machine a figure was measured on, in the terms that decide which kernels run.

The CPU's vector extensions (from /proc/cpuinfo on Linux) decide which kernels torch and ONNX Runtime pick,
and whether bf16 is computed natively: where it is only emulated (AVX2 without AVX512-BF16 or AMX-BF16, ARM
without the BF16 feature), a bf16 training step runs several times slower than fp32. Every function here takes
the cpuinfo text as an optional argument, so that it can be tested on any host, and none of them fails: on a
system without /proc/cpuinfo (macOS, Windows) they fall back to `platform` and an empty list of extensions.
"""
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Optional

__all__ = ['cpu_name', 'vector_extensions', 'native_bf16', 'package_version', 'describe', 'summary_line']

DISTRIBUTION = 'timm-mobileformer'
# (cpuinfo flag, readable name), in the order they are listed: x86 `flags`, then ARM `Features`
X86_EXTENSIONS: tuple[tuple[str, str], ...] = (
    ('sse4_2', 'SSE4.2'), ('avx', 'AVX'), ('avx2', 'AVX2'), ('fma', 'FMA'), ('avx_vnni', 'AVX-VNNI'),
    ('avx512f', 'AVX-512F'), ('avx512bw', 'AVX-512BW'), ('avx512vl', 'AVX-512VL'), ('avx512_vnni', 'AVX-512VNNI'),
    ('avx512_bf16', 'AVX512-BF16'), ('avx512_fp16', 'AVX512-FP16'), ('amx_bf16', 'AMX-BF16'), ('amx_int8', 'AMX-INT8'),
)
ARM_EXTENSIONS: tuple[tuple[str, str], ...] = (
    ('asimd', 'NEON'), ('neon', 'NEON'), ('asimddp', 'dotprod'), ('sve', 'SVE'), ('sve2', 'SVE2'), ('bf16', 'BF16'),
    ('i8mm', 'I8MM'),
)
NATIVE_BF16 = frozenset({'AVX512-BF16', 'AMX-BF16', 'BF16'})
# ARM cores by (CPU implementer, CPU part), as lscpu names them; others are shown by number
ARM_CORES = {
    ('0x41', '0xd08'): 'Cortex-A72', ('0x41', '0xd0b'): 'Cortex-A76', ('0x41', '0xd0c'): 'Neoverse-N1',
    ('0x41', '0xd40'): 'Neoverse-V1', ('0x41', '0xd49'): 'Neoverse-N2', ('0x41', '0xd4f'): 'Neoverse-V2',
}


def read_cpuinfo() -> str:
    """/proc/cpuinfo's text, or '' where there is none."""
    try:
        return Path('/proc/cpuinfo').read_text(errors='replace')
    except OSError:
        return ''


def cpuinfo_fields(cpuinfo: Optional[str] = None) -> dict[str, str]:
    """`key: value` pairs of the first processor listed (all cores of one machine report the same flags)."""
    text = read_cpuinfo() if cpuinfo is None else cpuinfo
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, colon, value = line.partition(':')
        if colon:
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def cpu_name(cpuinfo: Optional[str] = None) -> str:
    """The CPU's model name: cpuinfo's `model name`, an ARM core's name, or what `platform` knows."""
    fields = cpuinfo_fields(cpuinfo)
    if 'model name' in fields:
        return fields['model name']
    if 'cpu implementer' in fields:
        implementer, part = fields['cpu implementer'], fields.get('cpu part', '?')
        return ARM_CORES.get((implementer, part), f'ARM core (implementer {implementer}, part {part})')
    return platform.processor() or platform.machine() or 'unknown CPU'


def vector_extensions(cpuinfo: Optional[str] = None) -> list[str]:
    """The SIMD extensions that decide which kernels run (e.g. AVX2, AVX-512F, AMX-BF16; NEON, SVE, BF16),
    from cpuinfo's x86 `flags` or ARM `Features`; empty where cpuinfo is missing."""
    fields = cpuinfo_fields(cpuinfo)
    flags = set(fields.get('flags', '').split()) | set(fields.get('features', '').split())
    names: list[str] = []
    for flag, name in X86_EXTENSIONS + ARM_EXTENSIONS:
        if flag in flags and name not in names:
            names.append(name)
    return names


def native_bf16(cpuinfo: Optional[str] = None) -> bool:
    """Whether the CPU computes bf16 natively (x86 AVX512-BF16 or AMX-BF16, ARM BF16): only then is bf16
    autocast faster than fp32 on the CPU."""
    return not NATIVE_BF16.isdisjoint(vector_extensions(cpuinfo))


def _git(checkout: Path, *args: str) -> Optional[subprocess.CompletedProcess]:
    try:
        return subprocess.run(['git', '-C', str(checkout), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit(checkout: Path) -> Optional[str]:
    """The short hash of HEAD, with '+dirty' when tracked files changed, if `checkout` is the top of a git
    work tree; None otherwise (an installed package, no git)."""
    top = _git(checkout, 'rev-parse', '--show-toplevel')
    if top is None or top.returncode != 0 or Path(top.stdout.strip()).resolve() != checkout.resolve():
        return None
    head = _git(checkout, 'rev-parse', '--short', 'HEAD')
    if head is None or head.returncode != 0:
        return None
    changed = _git(checkout, 'status', '--porcelain', '--untracked-files=no')
    dirty = changed is not None and changed.returncode == 0 and bool(changed.stdout.strip())
    return head.stdout.strip() + ('+dirty' if dirty else '')


def package_version(checkout: Optional[Path] = None) -> str:
    """timm-mobileformer's version, plus the commit when it runs from a git checkout, e.g.
    '0.1.0 (commit f0a7af9+dirty)'. `checkout`: the folder holding the package (default: this one's)."""
    try:
        version = importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        from . import __version__ as version
    commit = git_commit(checkout or Path(__file__).resolve().parent.parent)
    return f'{version} (commit {commit})' if commit else version


def describe(cpuinfo: Optional[str] = None) -> dict[str, object]:
    """The machine and software a measurement depends on, as a JSON-ready record."""
    import timm
    import torch
    return dict(
        cpu=cpu_name(cpuinfo), vector_extensions=vector_extensions(cpuinfo), native_bf16=native_bf16(cpuinfo),
        logical_cpus=os.cpu_count(), torch_cpu_capability=torch.backends.cpu.get_cpu_capability(),
        python=platform.python_version(), torch=torch.__version__, timm=timm.__version__,
        timm_mobileformer=package_version(), platform=platform.platform(),
    )


def summary_line(record: dict[str, object]) -> str:
    """One line for people, from a `describe()` record: CPU, extensions, native bf16, package version."""
    extensions = ', '.join(record['vector_extensions']) or 'unknown'
    bf16 = 'yes' if record['native_bf16'] else 'no (emulated: bf16 runs slower than fp32)'
    return (f"{record['cpu']}, {record['logical_cpus']} logical CPUs; vector extensions: {extensions}; "
            f"native bf16: {bf16}; timm-mobileformer {record['timm_mobileformer']}")
