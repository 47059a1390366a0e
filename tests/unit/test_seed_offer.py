from peer.seed_offer import SPREAD_REFRESH_S, SeedOffer, SeedOffers


def test_a_piece_being_sent_is_not_offered_to_anyone_else() -> None:
    offer = SeedOffer(resend_after_s=1.0)
    assert offer.offered([0, 1, 2], now=0.0) == [0, 1, 2]
    assert offer.claim(1, now=0.0)
    assert offer.offered([0, 1, 2], now=0.5) == [0, 2]
    assert not offer.claim(1, now=0.5)


def test_a_sent_piece_is_offered_again_after_the_resend_delay() -> None:
    offer = SeedOffer(resend_after_s=1.0)
    assert offer.claim(3, now=0.0)
    offer.release(3, now=2.0, sent=True)
    assert offer.offered([3], now=2.9) == []
    assert offer.offered([3], now=3.0) == [3]
    assert offer.claim(3, now=3.0)


def test_a_failed_upload_offers_the_piece_again_at_once() -> None:
    offer = SeedOffer(resend_after_s=1.0)
    assert offer.claim(0, now=0.0)
    offer.release(0, now=0.1, sent=False)
    assert offer.offered([0], now=0.1) == [0]


def test_a_piece_being_sent_is_never_claimed_twice_however_long_it_takes() -> None:
    offer = SeedOffer(resend_after_s=0.0)
    assert offer.claim(0, now=0.0)
    assert not offer.claim(0, now=5.0)
    offer.release(0, now=5.0, sent=True)
    assert offer.claim(0, now=5.0)


def test_offers_per_blob_forget_the_least_recently_asked() -> None:
    offers = SeedOffers(max_blobs=2)
    a, b = offers.get("a"), offers.get("b")
    assert a.claim(0, now=0.0) and b.claim(0, now=0.0)
    assert offers.get("a") is a  # a is now the most recent
    offers.get("c")  # b goes
    assert offers.get("a") is a
    assert offers.get("b") is not b


def test_each_resend_of_a_piece_waits_twice_as_long_up_to_a_cap() -> None:
    offer = SeedOffer(resend_after_s=1.0, max_resend_after_s=3.0)
    now = 0.0
    for expected_wait_s in (1.0, 2.0, 3.0, 3.0):
        assert offer.claim(0, now)
        offer.release(0, now, sent=True)
        assert not offer.offers(0, now + expected_wait_s - 0.01)
        now += expected_wait_s
        assert offer.offers(0, now)


def test_a_piece_the_swarm_holds_waits_for_the_cap_before_a_resend() -> None:
    offer = SeedOffer(resend_after_s=1.0, max_resend_after_s=8.0)
    for index in (0, 1):
        assert offer.claim(index, now=0.0)
        offer.release(index, now=0.0, sent=True)
    offer.set_spread([2, 0])  # two normal peers hold piece 0, none piece 1
    assert offer.offered([0, 1], now=1.0) == [1]
    assert offer.offered([0, 1], now=7.9) == [1]
    assert offer.offered([0, 1], now=8.0) == [0, 1]
    offer.set_spread([])  # the scheduler could not be asked: time alone decides
    assert offer.offered([0, 1], now=1.0) == [0, 1]


def test_the_spread_is_asked_for_at_most_every_refresh_period() -> None:
    offer = SeedOffer()
    assert offer.spread_due(now=10.0)
    assert not offer.spread_due(now=10.0 + SPREAD_REFRESH_S / 2)
    assert offer.spread_due(now=10.0 + SPREAD_REFRESH_S)
