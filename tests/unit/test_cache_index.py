from peer.cache import CacheIndex


def test_evicts_least_recently_used_first() -> None:
    index = CacheIndex(quota_bytes=100)
    index.add("a", 40)
    index.add("b", 40)
    index.touch("a")  # b is now the oldest
    assert index.plan_eviction(30) == ["b"]


def test_never_evicts_blobs_being_read() -> None:
    index = CacheIndex(quota_bytes=100)
    index.add("a", 50)
    index.add("b", 50)
    index.acquire("a")
    assert index.plan_eviction(50) == ["b"]
    index.acquire("b")
    assert index.plan_eviction(50) is None
    index.release("b")
    assert not index.in_use("b")


def test_reservations_count_against_the_quota() -> None:
    index = CacheIndex(quota_bytes=100)
    index.reserve("inflight", 80)
    index.add("done", 10)
    assert index.used_bytes == 90
    assert index.plan_eviction(10) == []
    assert index.plan_eviction(20) == ["done"]
    assert index.plan_eviction(40) is None  # in-flight bytes are never evicted
    index.add("inflight", 80)  # completing turns the reservation into a blob
    assert index.reserved_bytes == 0 and index.blob_bytes == 90


def test_nothing_needed_nothing_evicted() -> None:
    index = CacheIndex(quota_bytes=10)
    index.add("a", 10)
    assert index.plan_eviction(0) == []


def test_kept_partial_downloads_count_and_go_first_oldest_first() -> None:
    index = CacheIndex(quota_bytes=100)
    index.add("blob", 40)
    index.add_partial("old", 30)
    index.add_partial("new", 20)
    assert index.used_bytes == 90
    assert index.plan_eviction(30) == ["old"]
    assert index.plan_eviction(60) == ["old", "new"]
    assert index.plan_eviction(70) == ["old", "new", "blob"]
    index.remove_partial("old")  # resumed: its task reserves the space instead
    assert index.partial_bytes == 20 and not index.is_partial("old")
