"""The capacity bench's own arithmetic: its printed stage latencies come from Prometheus histograms
read twice (bench/capacity.py), and a wrong bucket would misplace where latency goes."""

from __future__ import annotations

import math

from bench.capacity import histogram_totals, window_quantile

METRICS = """\
# HELP streamd_stream_stage_seconds Where the latency goes.
# TYPE streamd_stream_stage_seconds histogram
streamd_stream_stage_seconds_bucket{stage="chain",stream="1",le="0.1"} 40.0
streamd_stream_stage_seconds_bucket{stage="chain",stream="1",le="0.25"} 48.0
streamd_stream_stage_seconds_bucket{stage="chain",stream="1",le="+Inf"} 50.0
streamd_stream_stage_seconds_count{stage="chain",stream="1"} 50.0
streamd_stream_stage_seconds_sum{stage="chain",stream="1"} 4.0
streamd_stream_stage_seconds_bucket{stage="chain",stream="2",le="0.1"} 10.0
streamd_stream_stage_seconds_bucket{stage="chain",stream="2",le="0.25"} 40.0
streamd_stream_stage_seconds_bucket{stage="chain",stream="2",le="+Inf"} 50.0
streamd_stream_stage_seconds_count{stage="chain",stream="2"} 50.0
streamd_stream_stage_seconds_sum{stage="chain",stream="2"} 9.0
# HELP streamd_inference_batch_size Items per batch.
# TYPE streamd_inference_batch_size histogram
streamd_inference_batch_size_bucket{network="1",le="+Inf"} 30.0
streamd_inference_batch_size_count{network="1"} 30.0
streamd_inference_batch_size_sum{network="1"} 100.0
"""


def test_stage_buckets_are_summed_over_streams_and_batches_over_networks() -> None:
    batched, stages = histogram_totals(METRICS)
    assert batched == (100.0, 30.0)
    assert stages["chain"] == {0.1: 50.0, 0.25: 88.0, math.inf: 100.0}
    assert stages["buffer"] == {} and stages["emit_wait"] == {}


def test_the_quantile_is_the_bucket_of_what_the_window_added() -> None:
    before = {0.1: 50.0, 0.25: 88.0, math.inf: 100.0}
    after = {0.1: 150.0, 0.25: 188.0, math.inf: 200.0}  # the window: 100 frames, all under 0.1 s
    assert window_quantile(before, after, 0.95) == (0.0, 0.1)
    assert window_quantile({}, after, 0.95) == (0.25, math.inf)  # from the start: 12 of 200 over 0.25
    assert window_quantile({}, after, 0.9) == (0.1, 0.25)
    assert window_quantile(after, after, 0.95) is None  # nothing observed in the window
