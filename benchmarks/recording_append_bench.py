"""How long appending one interaction to a recording takes, for a small and a large recording.

    python benchmarks/recording_append_bench.py

Appending writes only the new interaction before the closing `]}` (helpers/recordings.py, RecordingFile), so the
cost should not grow with the file. tests/test_recordings.py checks that deterministically (bytes written per
append); this measures the time, which on a busy shared CPU is too noisy for a test (it used to be one).
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.recordings import RecordingFile  # noqa: E402

HEADER = {"source": "openai", "recorded_on": "2026-01-01", "sdk": "openai 3"}


def interaction(i: int) -> dict:
    reply = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": f"답 {i}"}}]}
    return {"request": {"method": "POST", "path": "/chat/completions", "body": {"n": i, "text": "호반스 " * 40}},
            "response": {"status": 200, "content_type": "application/json", "json": reply}}


def seconds_per_append(path: Path, n_before: int, repeats: int = 30) -> float:
    file = RecordingFile(path, HEADER)
    for i in range(n_before):
        file.append(interaction(i), succeeded=True)
    start = time.perf_counter()
    for i in range(repeats):
        file.append(interaction(i), succeeded=True)
    return (time.perf_counter() - start) / repeats


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        for n in (100, 3000):
            print(f"{n:>5} interactions before: {seconds_per_append(Path(folder) / f'{n}.json', n) * 1000:.2f} ms "
                  "per append")
