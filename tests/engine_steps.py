"""Watching and holding an inference engine's decoding steps, so that tests assert on what happened in which order
instead of on how long it took."""
from __future__ import annotations

import threading
from typing import Callable

HOLD_SECONDS = 30  # the longest a held step waits for the test: a test that never releases it fails, not hangs


class StepWatch:
    """Wraps `engine._forward`, recording the number of rows of every decoding step (one new token per row) in
    `decode_rows` and the columns of its attention mask (the KV cache's, with the new token) in `mask_widths`. Before a step for which hold(decode_rows) is true, the engine thread sets `held` and waits until
    release(): meanwhile the test can look at what has been answered, or hand the engine more work."""

    def __init__(self, engine, hold: Callable[[list[int]], bool]):
        self.engine, self.hold = engine, hold
        self.decode_rows: list[int] = []
        self.mask_widths: list[int] = []
        self.held, self.released = threading.Event(), threading.Event()
        forward = engine._forward

        def watched(input_ids, mask, *args):
            if input_ids.shape[1] == 1:  # a decoding step (every prompt in these tests is longer than one token)
                self.decode_rows.append(input_ids.shape[0])
                self.mask_widths.append(mask.shape[1])
                if self.hold(self.decode_rows):
                    self.held.set()
                    self.released.wait(HOLD_SECONDS)
            return forward(input_ids, mask, *args)
        engine._forward = watched

    def release(self) -> None:
        self.released.set()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        del self.engine._forward


def last_row_left(decode_rows: list[int]) -> bool:
    """Rows have decoded together, and one row is left."""
    return decode_rows[-1] == 1 and max(decode_rows) > 1
