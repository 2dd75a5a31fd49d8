"""Deferring garbage collection around the poll cycle (sparcs.controller.heap)."""

from __future__ import annotations

import gc
import weakref

import pytest

from sparcs.controller.heap import collections_deferred, settle_heap


def test_collection_resumes_when_the_last_of_overlapping_blocks_ends():
    assert gc.isenabled()
    first, second = collections_deferred(), collections_deferred()
    first.__enter__()
    second.__enter__()
    assert not gc.isenabled()
    first.__exit__(None, None, None)  # a poll cycle ends while a dispatch cycle still writes
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_collection_turned_off_by_its_owner_stays_off():
    gc.disable()
    try:
        with collections_deferred():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_an_error_in_the_block_still_resumes_collection():
    with pytest.raises(ValueError), collections_deferred():
        raise ValueError("a failed poll")
    assert gc.isenabled()


def test_settling_collects_todays_garbage_and_freezes_the_rest():
    class Node:
        pass

    garbage, kept = Node(), Node()
    garbage.me = garbage  # a reference cycle: only a collection frees it
    gone = weakref.ref(garbage)
    del garbage
    try:
        settle_heap()
        assert gone() is None
        assert not any(o is kept for o in gc.get_objects())  # frozen: no collection walks it
    finally:
        gc.unfreeze()  # leave the test process's collector as it was
