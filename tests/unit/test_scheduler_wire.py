"""The scheduler's decision answers with their piece digests serialised once per change."""

from __future__ import annotations

import json

from scheduler.core import DecisionReason, ParentChoice, Parents, RetryLater
from scheduler.service.wire import DigestsText, decision_body, decision_json

TASK = "sha256:" + "ab" * 32
PARENTS = Parents((ParentChoice("p1", "h1", "10.0.0.1", 65002, 0.75),))


def digest(index: int, salt: str = "") -> str:
    return f"sha256:{salt}{index:0{64 - len(salt)}x}"


def test_a_spliced_answer_is_the_plain_one() -> None:
    digests = {i: digest(i) for i in (2, 0, 10, 1)}
    texts = DigestsText()
    body = decision_body(PARENTS, texts.get(TASK, digests))
    assert json.loads(body) == decision_json(PARENTS, digests)
    # Pieces in numeric order, as before: "10" after "2".
    assert list(json.loads(body)["piece_digests"]) == ["0", "1", "2", "10"]
    retry = RetryLater(0.5, DecisionReason.NO_PARENT_YET)
    assert json.loads(decision_body(retry, "")) == decision_json(retry, {})


def test_digests_that_changed_are_never_served_stale() -> None:
    texts = DigestsText(max_tasks=2)
    digests = {0: digest(0), 1: digest(1)}
    first = texts.get(TASK, digests)
    assert texts.get(TASK, dict(digests)) is first  # unchanged: the same text
    digests[1] = digest(1, salt="e")  # dropped and set again to another value
    assert json.loads(texts.get(TASK, digests)) == {"0": digest(0), "1": digest(1, salt="e")}
    del digests[0]
    assert json.loads(texts.get(TASK, digests)) == {"1": digest(1, salt="e")}
    # Bounded: the least recently used task goes first.
    texts.get("sha256:" + "01" * 32, {})
    texts.get("sha256:" + "02" * 32, {})
    assert len(texts._texts) == 2 and TASK not in texts._texts
