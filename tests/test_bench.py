"""`timm-mobileformer bench` arithmetic and argument checks (its timings are measurements, not tests)."""
import pytest

from timm_mobileformer.bench import Cell, summarize
from cli_util import error_line


def test_ratios_are_per_round_and_per_madd():
    cell = Cell('fused', 1, rounds={'mobileformer_294m': [60., 66., 50.], 'peer': [80., 60., 100.]})
    assert cell.ips('mobileformer_294m') == 60.
    assert cell.ratio('mobileformer_294m', 'peer') == (0.75, 0.5, 1.1)  # median, min, max of 0.75, 1.1, 0.5
    row, peer_row = summarize([cell], ['mobileformer_294m'], ['peer'], {'mobileformer_294m': 300, 'peer': 200})
    assert row['per_madd_peer'] == pytest.approx(0.75 * 300 / 200)
    assert 'ratio_peer' not in peer_row


def test_unknown_variant_is_refused(tmp_path):
    assert "unknown model '999m'" in error_line(['bench', '--model', '999m', '--out', str(tmp_path / 'b')], code=2)
    assert "unknown model '999m'" in error_line(['export', '--model', '999m', '--out', str(tmp_path / 'm.onnx')],
                                                code=2)
    assert not any(tmp_path.iterdir())
