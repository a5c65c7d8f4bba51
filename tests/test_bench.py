"""`timm-mobileformer bench` arithmetic and argument checks (its timings are measurements, not tests)."""
import pytest

from timm_mobileformer.bench import Cell, summarize
from timm_mobileformer.cli import main


def test_ratios_are_per_round_and_per_madd():
    cell = Cell('fused', 1, rounds={'mobileformer_294m': [60., 66., 50.], 'peer': [80., 60., 100.]})
    assert cell.ips('mobileformer_294m') == 60.
    assert cell.ratio('mobileformer_294m', 'peer') == (0.75, 0.5, 1.1)  # median, min, max of 0.75, 1.1, 0.5
    row, peer_row = summarize([cell], ['mobileformer_294m'], ['peer'], {'mobileformer_294m': 300, 'peer': 200})
    assert row['per_madd_peer'] == pytest.approx(0.75 * 300 / 200)
    assert 'ratio_peer' not in peer_row


def test_unknown_variant_is_refused():
    with pytest.raises(SystemExit, match='unknown variant 999m'):
        main(['bench', '999m'])
    with pytest.raises(SystemExit, match='unknown variant 999m'):
        main(['export', '999m', '--out', 'never.onnx'])
