"""The diarization benchmark's accuracy: best one-to-one mapping of labels to true speakers."""

from __future__ import annotations

from bench.diarization import Cost, best_mapping_accuracy


def test_labels_are_mapped_one_to_one() -> None:
    truth = ["a", "b", "a", "b"]
    assert best_mapping_accuracy(truth, ["S2", "S1", "S2", "S1"]) == 1.0
    assert best_mapping_accuracy(truth, ["S1", "S1", "S1", "S1"]) == 0.5  # one label: one speaker right
    assert best_mapping_accuracy(truth, ["S1", "S2", "S3", "S2"]) == 0.75  # S3 maps to nobody
    assert best_mapping_accuracy(truth, [None, "S1", "S2", "S1"]) == 0.75


def test_costs_add_up_over_sequences() -> None:
    total = Cost([10.0, 20.0], 15.0, [5.0]) + Cost([30.0], 30.0, [7.0, 9.0])
    assert total.alone == [10.0, 20.0, 30.0] and total.batched == [5.0, 7.0, 9.0]
    assert total.cpu_alone == 20.0  # weighted by calls
    assert total.row().split() == ["20.0", "29.0", "20.0", "7.0", "8.8"]
