"""The machine record: CPU name, vector extensions and native bf16 parsed from cpuinfo text, package version;
the line `timm-mobileformer info` prints."""
import subprocess

import pytest

from timm_mobileformer import __version__
from timm_mobileformer.cli import main
from timm_mobileformer.machine import (
    cpu_name,
    describe,
    native_bf16,
    package_version,
    summary_line,
    vector_extensions,
)

XEON_SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse sse2 sse4_1 sse4_2 fma avx avx2 avx512f avx512dq avx512bw avx512vl avx_vnni avx512_bf16 \
avx512_vnni avx512_fp16 amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse sse2
"""
EPYC_ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13 64-Core Processor
flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 fma avx avx2 bmi2 sha_ni vaes
"""
NEOVERSE_V1 = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm asimddp sve i8mm bf16
CPU implementer\t: 0x41
CPU part\t: 0xd40
"""


@pytest.mark.parametrize('cpuinfo, name, extensions, bf16', [
    (XEON_SAPPHIRE_RAPIDS, 'Intel(R) Xeon(R) Platinum 8480+',
     ['SSE4.2', 'AVX', 'AVX2', 'FMA', 'AVX-VNNI', 'AVX-512F', 'AVX-512BW', 'AVX-512VL', 'AVX-512VNNI',
      'AVX512-BF16', 'AVX512-FP16', 'AMX-BF16', 'AMX-INT8'], True),
    (EPYC_ZEN3, 'AMD EPYC 7B13 64-Core Processor', ['SSE4.2', 'AVX', 'AVX2', 'FMA'], False),
    (NEOVERSE_V1, 'Neoverse-V1', ['NEON', 'dotprod', 'SVE', 'BF16', 'I8MM'], True),
])
def test_cpuinfo_gives_name_extensions_and_native_bf16(cpuinfo, name, extensions, bf16):
    assert cpu_name(cpuinfo) == name
    assert vector_extensions(cpuinfo) == extensions
    assert native_bf16(cpuinfo) is bf16


def test_arm_without_bf16_and_unknown_core():
    cpuinfo = NEOVERSE_V1.replace(' bf16', '').replace('0xd40', '0xfff')
    assert not native_bf16(cpuinfo)
    assert cpu_name(cpuinfo) == 'ARM core (implementer 0x41, part 0xfff)'


def test_missing_cpuinfo_degrades_to_platform(monkeypatch):
    monkeypatch.setattr('platform.processor', lambda: '')
    monkeypatch.setattr('platform.machine', lambda: 'arm64')
    assert cpu_name('') == 'arm64'
    assert vector_extensions('') == []
    assert not native_bf16('')


def test_describe_and_its_line():
    record = describe(EPYC_ZEN3)
    assert record['cpu'] == 'AMD EPYC 7B13 64-Core Processor'
    assert record['native_bf16'] is False
    assert record['timm_mobileformer'].startswith(__version__)
    assert {'logical_cpus', 'python', 'torch', 'timm', 'torch_cpu_capability'} <= set(record)
    line = summary_line(record)
    assert 'vector extensions: SSE4.2, AVX, AVX2, FMA; native bf16: no (emulated' in line
    assert f'timm-mobileformer {__version__}' in line
    assert 'native bf16: yes;' in summary_line(describe(NEOVERSE_V1))


def test_info_prints_the_machine_line_first(capsys):
    assert main(['info', '--model', '26m', '--img-size', '32']) == 0
    first_line = capsys.readouterr().out.splitlines()[0]
    assert first_line.startswith('machine: ')
    assert f"vector extensions: {', '.join(vector_extensions()) or 'unknown'}; " in first_line
    assert f"native bf16: {'yes' if native_bf16() else 'no'}" in first_line
    assert f'timm-mobileformer {__version__}' in first_line


def _git(folder, *args):
    subprocess.run(['git', '-C', str(folder), *args], check=True, capture_output=True)


def test_package_version_names_the_commit_and_changes(tmp_path):
    assert package_version(tmp_path) == __version__  # not a git checkout
    _git(tmp_path, 'init', '-q')
    (tmp_path / 'file.txt').write_text('one')
    _git(tmp_path, 'add', 'file.txt')
    _git(tmp_path, '-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-q', '-m', 'one')
    head = subprocess.run(['git', '-C', str(tmp_path), 'rev-parse', '--short', 'HEAD'], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert package_version(tmp_path) == f'{__version__} (commit {head})'
    (tmp_path / 'file.txt').write_text('two')
    assert package_version(tmp_path) == f'{__version__} (commit {head}+dirty)'
    assert package_version(tmp_path / 'missing') == __version__
