"""ReadySet.push_all: a restored standard queue's ready messages go in at once, and come out as
pushing each one would have them."""

import random

from dovecote.actors.ready_set import ReadySet


def drain(ready: ReadySet) -> list[int]:
    out = []
    while ready:
        out.append(ready.pop())
    return out


def test_push_all_serves_as_pushes_do():
    seqs = list(range(1, 2001))
    one_by_one, at_once = ReadySet(), ReadySet()
    for seq in seqs:
        one_by_one.push(seq, "")
    at_once.push_all(seqs, "")
    assert drain(at_once) == drain(one_by_one) == seqs


def test_push_all_merges_with_what_is_there_and_rotates_groups():
    ready = ReadySet()
    ready.push(5, "a")
    shuffled = [9, 1, 7, 3]
    random.Random(1).shuffle(shuffled)
    ready.push_all(shuffled, "a")
    ready.push_all([2, 4], "b")
    ready.push_all([], "c")  # nothing: no group "c" in the rotation
    assert drain(ready) == [1, 2, 3, 4, 5, 7, 9]
