"""The two-tier cache on its own: the parsed tier bounded by count, the packed tier by bytes, a value dropped from the
first read back equal from the second, the newest value kept wherever an older one sat. Pure: a toy codec and the
two real ones (customer windows, terminal windows)."""

from __future__ import annotations

from app.features.engine import CustomerWindow, TerminalWindow
from app.state.customers import pack_window, unpack_window
from app.state.terminals import decode_state, encode_state
from app.state.two_tier import TwoTierCache


def text_cache(size: int, budget_bytes: int) -> TwoTierCache[str]:
    """Values are strings, packed as their UTF-8 bytes (the length of a packed value is the string's)."""
    return TwoTierCache(size, budget_bytes, str.encode, bytes.decode)


def test_the_parsed_tier_keeps_the_most_recent_by_count_and_a_get_makes_a_value_recent() -> None:
    cache = text_cache(3, 0)
    for key in "abcd":
        cache.keep(key, key * 2)
    assert list(cache.parsed) == ["b", "c", "d"] and not cache.packed  # no packed tier: "a" is gone
    assert cache.get("a") is None
    assert cache.get("b") == "bb" and list(cache.parsed) == ["c", "d", "b"]
    cache.keep("e", "ee")
    assert list(cache.parsed) == ["d", "b", "e"]  # "c", the least recent, went first


def test_a_dropped_value_is_packed_and_read_back_equal_and_parsed_again() -> None:
    cache = text_cache(2, 1_000)
    for key in "abc":
        cache.keep(key, key * 3)
    assert list(cache.parsed) == ["b", "c"] and cache.packed == {"a": b"aaa"} and cache.packed_bytes == 3
    assert "a" in cache and len(cache) == 3
    assert cache.get("a") == "aaa"  # decoded, made the most recent parsed one, out of the packed tier
    assert list(cache.parsed) == ["c", "a"] and cache.packed == {"b": b"bbb"} and cache.packed_bytes == 3


def test_the_packed_tier_keeps_to_its_byte_budget_the_least_recently_packed_going_first() -> None:
    cache = text_cache(1, 10)
    for key, value in [("a", "1234"), ("b", "5678"), ("c", "90"), ("d", "x")]:
        cache.keep(key, value)
    assert list(cache.packed) == ["a", "b", "c"] and cache.packed_bytes == 10  # 4 + 4 + 2: the budget exactly
    cache.keep("e", "y")  # "d" packed: 11 bytes, over; "a" goes
    assert list(cache.packed) == ["b", "c", "d"] and cache.packed_bytes == 7 and list(cache.parsed) == ["e"]
    cache.keep("f", "z" * 20)  # "e" packed; then "f" alone is more than the budget when dropped: it goes too
    cache.keep("g", "w")
    assert "f" not in cache and cache.packed_bytes <= 10
    assert cache.packed_bytes == sum(len(v) for v in cache.packed.values())


def test_a_value_the_codec_cannot_pack_is_dropped_not_packed() -> None:
    cache: TwoTierCache[str] = TwoTierCache(1, 100, lambda v: None if "\x00" in v else v.encode(), bytes.decode)
    cache.keep("a", "a\x00")
    cache.keep("b", "b")
    cache.keep("c", "c")
    assert list(cache.packed) == ["b"] and "a" not in cache and cache.packed_bytes == 1


def test_keep_replaces_an_older_value_in_either_tier_and_forget_and_clear_empty_both() -> None:
    cache = text_cache(1, 100)
    cache.keep("a", "old")
    cache.keep("b", "bb")
    assert cache.packed == {"a": b"old"}
    cache.keep("a", "newer")  # the owner's newest value: the packed copy goes, the budget gets its bytes back
    assert cache.parsed == {"a": "newer"} and cache.packed == {"b": b"bb"} and cache.packed_bytes == 2
    assert cache.get("a") == "newer" and cache.peek("b") == "bb"
    cache.keep("a", "newest")
    assert cache.get("a") == "newest" and len(cache) == 2
    cache.forget("b")
    cache.forget("missing")
    assert "b" not in cache and cache.packed_bytes == 0 and cache.parsed == {"a": "newest"}
    cache.keep("c", "cc")
    cache.clear()
    assert len(cache) == 0 and cache.packed_bytes == 0 and cache.get("a") is None


def test_peek_changes_neither_tier_nor_its_order() -> None:
    cache = text_cache(2, 100)
    for key in "abcd":
        cache.keep(key, key)
    parsed, packed = list(cache.parsed), list(cache.packed)
    assert [cache.peek(k) for k in "abcde"] == ["a", "b", "c", "d", None]
    assert list(cache.parsed) == parsed == ["c", "d"] and list(cache.packed) == packed == ["a", "b"]


def test_the_real_codecs_read_back_what_was_packed() -> None:
    windows = [CustomerWindow.of([(1.0 + i, 2.5 * i, f"k{i}", f"t{i}", i) for i in range(n)]) for n in (1, 3, 7)]
    customers = TwoTierCache(1, 10_000, pack_window, unpack_window)
    for i, window in enumerate(windows):
        customers.keep(f"c{i}", window)
    assert list(customers.packed) == ["c0", "c1"]
    assert customers.peek("c0") == windows[0] and customers.get("c1") == windows[1]
    terminals_ = [TerminalWindow.of([(1.0 + i, f"t{i}", i) for i in range(n)]) for n in (2, 5)]
    terminals = TwoTierCache(1, 10_000, encode_state, decode_state)
    terminals.keep("k0", terminals_[0])
    terminals.keep("k1", terminals_[1])
    assert list(terminals.packed) == ["k0"] and terminals.get("k0") == terminals_[0]
