"""Dynamic batching: the pure policy with hand-built inputs, then the asyncio batcher with a recording
runner (the runner is the batcher's only dependency; the real TF executor is exercised in
test_inference.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from streamd.errors import UnavailableError
from streamd.inference.batching import BatchPolicy, Dispatch, DynamicBatcher, Idle, WaitUntil

POLICY = BatchPolicy(max_batch_size=4, max_wait_s=0.5, max_inflight=1)


def test_policy_is_idle_without_items() -> None:
    assert POLICY.next_action(queued=0, deadline_s=None, inflight=0, now_s=10.0) == Idle()


def test_policy_dispatches_a_full_batch_at_once() -> None:
    assert POLICY.next_action(queued=4, deadline_s=10.5, inflight=0, now_s=10.0) == Dispatch(4)
    assert POLICY.next_action(queued=9, deadline_s=10.5, inflight=0, now_s=10.0) == Dispatch(4)


def test_policy_waits_until_the_first_deadline() -> None:
    assert POLICY.next_action(queued=2, deadline_s=10.5, inflight=0, now_s=10.1) == WaitUntil(10.5)


def test_an_item_waits_max_wait_or_its_lanes_longer_wait() -> None:
    from streamd.inference.batching import API_LANE, LIVE, Lane

    assert POLICY.deadline(10.0, API_LANE) == 10.5
    assert POLICY.deadline(10.0, Lane(LIVE, "stream-1", max_wait_s=2.0)) == 12.0
    assert POLICY.deadline(10.0, Lane(LIVE, "stream-1", max_wait_s=0.1)) == 10.5  # never shorter


def test_policy_dispatches_a_partial_batch_after_max_wait() -> None:
    assert POLICY.next_action(queued=2, deadline_s=10.5, inflight=0, now_s=10.5) == Dispatch(2)


def test_policy_holds_items_while_the_executor_is_busy() -> None:
    assert POLICY.next_action(queued=4, deadline_s=10.5, inflight=1, now_s=11.0) == Idle()
    wider = BatchPolicy(max_batch_size=4, max_wait_s=0.5, max_inflight=2)
    assert wider.next_action(queued=4, deadline_s=10.5, inflight=1, now_s=10.0) == Dispatch(4)


def test_policy_cuts_as_soon_as_the_previous_batch_size_is_reached() -> None:
    assert POLICY.next_action(queued=3, deadline_s=10.5, inflight=0, now_s=10.0, expected=3) == Dispatch(3)
    assert POLICY.next_action(queued=2, deadline_s=10.5, inflight=0, now_s=10.0, expected=3) == WaitUntil(
        10.5
    )
    assert POLICY.next_action(queued=3, deadline_s=10.5, inflight=1, now_s=10.0, expected=3) == Idle()


def test_policy_with_batches_of_one_never_waits() -> None:
    single = BatchPolicy(max_batch_size=1, max_wait_s=0.5)
    assert single.next_action(queued=3, deadline_s=10.5, inflight=0, now_s=10.0) == Dispatch(1)


class Runner:
    """Records batches; each batch waits for `release` so tests control timing with events, not sleeps."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.started = asyncio.Event()
        self.fail_on = fail_on

    async def __call__(self, items: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        self.started.set()
        await self.release.wait()
        if self.fail_on is not None and self.fail_on in items:
            raise RuntimeError(f"batch with {self.fail_on} failed")
        return [item * 10 for item in items]


async def test_concurrent_callers_share_one_batch() -> None:
    runner = Runner()
    batcher: DynamicBatcher[int, int] = DynamicBatcher("t", runner, BatchPolicy(8, max_wait_s=5.0))
    results = await asyncio.gather(*(batcher.submit(i) for i in range(8)))
    assert results == [i * 10 for i in range(8)]
    assert runner.batches == [list(range(8))]
    assert batcher.stats.batches == 1 and batcher.stats.items == 8


async def test_partial_batch_is_dispatched_after_max_wait() -> None:
    runner = Runner()
    batcher: DynamicBatcher[int, int] = DynamicBatcher("t", runner, BatchPolicy(8, max_wait_s=0.01))
    assert await asyncio.gather(batcher.submit(1), batcher.submit(2)) == [10, 20]
    assert runner.batches == [[1, 2]]


async def test_callers_coming_back_together_skip_the_timer() -> None:
    runner = Runner()
    batcher: DynamicBatcher[int, int] = DynamicBatcher("t", runner, BatchPolicy(2, max_wait_s=30.0))
    assert await asyncio.gather(batcher.submit(1), batcher.submit(2)) == [10, 20]  # a full batch of 2
    batcher.policy = BatchPolicy(8, max_wait_s=30.0)
    # Two items again: the previous batch held two, so they go at once instead of after 30 s.
    assert await asyncio.wait_for(asyncio.gather(batcher.submit(3), batcher.submit(4)), 5.0) == [30, 40]
    assert runner.batches == [[1, 2], [3, 4]]


async def test_a_live_cameras_frames_wait_their_lanes_time_for_company() -> None:
    """Cameras out of phase: frames arrive one by one. Each waits its lane's time for others, even
    right after a batch of one (whose size would otherwise cut the next batch at one item at once)."""
    from streamd.inference.batching import LANE, LIVE, Lane

    runner = Runner()
    batcher: DynamicBatcher[int, int] = DynamicBatcher("t", runner, BatchPolicy(8, max_wait_s=0.0))
    assert await batcher.submit(0) == 0  # an API request alone: a batch of one, at once

    async def frame(camera: int, item: int) -> int:
        LANE.set(Lane(LIVE, f"stream-{camera}", max_wait_s=0.5))
        return await batcher.submit(item)

    started = asyncio.get_running_loop().time()
    first = asyncio.ensure_future(frame(1, 1))
    await asyncio.sleep(0.05)  # the next camera's frame comes later
    assert not first.done() and runner.batches == [[0]]
    assert await asyncio.gather(first, frame(2, 2)) == [10, 20]
    assert runner.batches == [[0], [1, 2]]
    assert 0.45 <= asyncio.get_running_loop().time() - started < 5.0  # the first frame's deadline


async def test_a_request_behind_a_waiting_live_frame_leaves_at_its_own_deadline() -> None:
    """The timer armed for a live frame's long wait is re-armed for a request's short one; the frame
    goes along with it."""
    from streamd.inference.batching import LANE, LIVE, Lane

    runner = Runner()
    batcher: DynamicBatcher[int, int] = DynamicBatcher("t", runner, BatchPolicy(8, max_wait_s=0.01))

    async def frame() -> int:
        LANE.set(Lane(LIVE, "stream-1", max_wait_s=30.0))
        return await batcher.submit(1)

    waiting = asyncio.ensure_future(frame())
    await asyncio.sleep(0.05)
    assert not waiting.done()  # the frame waits for company
    assert await asyncio.wait_for(asyncio.gather(batcher.submit(2), waiting), 5.0) == [20, 10]
    assert runner.batches == [[1, 2]]


def test_a_streams_lane_waits_when_frames_come_at_a_cameras_pace() -> None:
    from streamd.inference.batching import FILE, LIVE, Lane
    from streamd.streams.pipeline import lane_of
    from streamd.video.source import SourceSettings

    camera = SourceSettings("rtsp://cam/1", is_live=True)
    replay = SourceSettings("cam.mp4", is_live=False, realtime=True)
    file = SourceSettings("cam.mp4", is_live=False)
    assert lane_of(7, camera, 0.05) == Lane(LIVE, "stream-7", 0.05)
    # A file played in realtime waits like a camera but keeps the files' priority: it may fall behind
    # and catch up at full speed, and must not then take batches from cameras.
    assert lane_of(8, replay, 0.05) == Lane(FILE, "stream-8", 0.05)
    assert lane_of(9, file, 0.05) == Lane(FILE, "stream-9", 0.0)


async def test_items_submitted_in_one_loop_iteration_leave_together() -> None:
    runner = Runner()
    batcher: DynamicBatcher[int, int] = DynamicBatcher("t", runner, BatchPolicy(1, max_wait_s=30.0))
    assert await batcher.submit(0) == 0  # the previous batch held one item...
    batcher.policy = BatchPolicy(8, max_wait_s=30.0)
    # ...yet five items gathered at once (a frame's crops) still form one batch, without waiting.
    assert await asyncio.wait_for(asyncio.gather(*(batcher.submit(i) for i in range(1, 6))), 5.0) == [
        10,
        20,
        30,
        40,
        50,
    ]
    assert runner.batches == [[0], [1, 2, 3, 4, 5]]


async def test_items_queue_while_a_batch_runs_and_form_the_next_batch() -> None:
    runner = Runner()
    runner.release.clear()
    batcher: DynamicBatcher[int, int] = DynamicBatcher("t", runner, BatchPolicy(2, max_wait_s=0.0))
    first = asyncio.ensure_future(batcher.submit(0))
    await runner.started.wait()
    later = [asyncio.ensure_future(batcher.submit(i)) for i in (1, 2, 3)]
    await asyncio.sleep(0)
    assert runner.batches == [[0]]
    runner.release.set()
    assert await first == 0 and [await f for f in later] == [10, 20, 30]
    assert runner.batches == [[0], [1, 2], [3]]


async def test_an_error_fails_every_item_of_its_batch_and_only_that_batch() -> None:
    runner = Runner(fail_on=2)
    batcher: DynamicBatcher[int, int] = DynamicBatcher("t", runner, BatchPolicy(2, max_wait_s=0.01))
    outcomes = await asyncio.gather(*(batcher.submit(i) for i in range(4)), return_exceptions=True)
    assert outcomes[:2] == [0, 10]
    assert all(isinstance(o, RuntimeError) and str(o) == "batch with 2 failed" for o in outcomes[2:])
    assert batcher.stats.failed_batches == 1
    assert await batcher.submit(5) == 50


async def test_per_item_errors_reach_only_their_caller() -> None:
    async def runner(items: Sequence[int]) -> list[int | BaseException]:
        return [ValueError("bad item") if item == 1 else item for item in items]

    batcher: DynamicBatcher[int, int] = DynamicBatcher("t", runner, BatchPolicy(3, max_wait_s=5.0))
    outcomes = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert outcomes[0] == 0 and outcomes[2] == 2
    assert isinstance(outcomes[1], ValueError)


async def test_cancelled_items_are_skipped() -> None:
    runner = Runner()
    batcher: DynamicBatcher[int, int] = DynamicBatcher("t", runner, BatchPolicy(3, max_wait_s=0.05))
    doomed = asyncio.ensure_future(batcher.submit(1))
    kept = asyncio.ensure_future(batcher.submit(2))
    await asyncio.sleep(0)
    doomed.cancel()
    assert await kept == 20
    assert runner.batches == [[2]]
    assert batcher.stats.cancelled_items == 1


async def test_close_fails_queued_items_and_refuses_new_ones() -> None:
    runner = Runner()
    runner.release.clear()
    batcher: DynamicBatcher[int, int] = DynamicBatcher("t", runner, BatchPolicy(1, max_wait_s=0.0))
    running = asyncio.ensure_future(batcher.submit(1))
    await runner.started.wait()
    queued = asyncio.ensure_future(batcher.submit(2))
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(batcher.close())
    await asyncio.sleep(0)
    runner.release.set()
    await closing
    assert await running == 10  # the running batch finished
    with pytest.raises(UnavailableError, match="unloaded before this item ran"):
        await queued
    with pytest.raises(UnavailableError, match="unloading"):
        await batcher.submit(3)


def test_a_batch_takes_lanes_round_robin_live_before_files() -> None:
    from streamd.inference.batching import FILE, LIVE, Lane, pick_fair

    file, cam1, cam2 = Lane(FILE, "stream-1"), Lane(LIVE, "stream-2"), Lane(LIVE, "stream-3")
    # Six frames of a file arrived first, then two of each camera.
    lanes = [file] * 6 + [cam1, cam2, cam1, cam2]
    assert pick_fair(lanes, 3) == [6, 7, 0]  # one per camera, then the file, oldest first in each
    assert pick_fair(lanes, 6) == [6, 7, 0, 8, 9, 1]
    assert pick_fair(lanes, 10) == [6, 7, 0, 8, 9, 1, 2, 3, 4, 5]
    assert pick_fair([file] * 4, 2) == [0, 1]


async def test_live_cameras_are_not_starved_by_a_file_at_full_speed() -> None:
    from streamd.inference.batching import FILE, LANE, LIVE, Lane

    runner = Runner()
    runner.release.clear()
    batcher: DynamicBatcher[int, int] = DynamicBatcher("t", runner, BatchPolicy(4, max_wait_s=0.0))
    first = asyncio.ensure_future(batcher.submit(-1))
    await runner.started.wait()  # a batch runs: what follows queues

    async def submit_in(lane: Lane, item: int) -> int:
        LANE.set(lane)
        return await batcher.submit(item)

    file = [asyncio.ensure_future(submit_in(Lane(FILE, "file"), i)) for i in range(8)]
    await asyncio.sleep(0)
    cams = [asyncio.ensure_future(submit_in(Lane(LIVE, f"cam{i}"), 100 + i)) for i in range(2)]
    await asyncio.sleep(0)
    runner.release.set()
    await asyncio.gather(first, *file, *cams)
    # FIFO would have sent [0, 1, 2, 3] next and the cameras two batches later.
    assert runner.batches == [[-1], [0, 1, 100, 101], [2, 3, 4, 5], [6, 7]]
