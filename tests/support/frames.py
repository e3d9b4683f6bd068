"""Where another thread is: a condition a test can wait on when the only sign that a
thread has reached a point is that it is waiting there."""

from __future__ import annotations

import sys


def waiting_in(thread_id: int | None, function: str) -> bool:
    """Is the thread `thread_id` inside a call of a function named `function` now?"""
    frame = sys._current_frames().get(thread_id) if thread_id is not None else None
    while frame is not None:
        if frame.f_code.co_name == function:
            return True
        frame = frame.f_back
    return False
