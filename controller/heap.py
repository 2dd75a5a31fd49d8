"""The garbage collector in the long-running processes (control, API, simulated fleet).

CPython's full collection walks every tracked object with the whole process stopped. A process
that holds its fleet for good (configuration, device clients, the read model, the simulated
devices) spends most of such a collection on objects that never become garbage: measured at 1,000
devices on this machine, 200–270 ms every 10–15 s in the control process and 160–200 ms every
~25 s in the simulated fleet's, each landing inside a poll cycle; ~130 ms in the API process. Once
those objects are frozen (:func:`settle_heap`), a full collection walks only what came after:
still ~60–150 ms at 1,000 devices (each poll's readings live long enough to reach the oldest
generation), so the poll cycle defers collections to its end (:func:`collections_deferred`).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


def settle_heap() -> None:
    """Collect what is garbage now, then leave every surviving object out of later collections.

    Call it once a process holds what it keeps for good (it serves, polls or simulates), and again
    after a change that replaces part of that (a reload): the old objects are unfrozen first, so
    what the change left behind is collected rather than kept. Costs one full collection.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


_deferring = 0
"""Open :func:`collections_deferred` blocks (cycles of one process may overlap: a dispatch cycle's
writes and a poll-only cycle)."""
_enable_after = False
"""Whether the outermost block found automatic collection on (it turns it back on when it ends)."""


@contextlib.contextmanager
def collections_deferred() -> Iterator[None]:
    """Within the block, no automatic collection starts: one that falls due waits for the block's
    end and runs at the first allocation after it, in the time between poll cycles.

    For the poll cycle (read, state, guard, writes; bounded by the Modbus timeouts): a full
    collection landing inside it would delay the guard and every write behind it (see the module
    docstring). Not for a dispatch: building a large problem for seconds without collecting would
    hold its garbage cycles until the end. Blocks may nest or overlap; collection resumes when the
    last one ends, and only if it was on when the first began.
    """
    global _deferring, _enable_after
    if _deferring == 0:
        _enable_after = gc.isenabled()
        gc.disable()
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if _deferring == 0 and _enable_after:
            gc.enable()
