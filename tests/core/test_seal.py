"""The keyring and the sealing of one datagram: what opens, what does not, and why."""

from __future__ import annotations

import random

import pytest

from chatterd.core.config import REPLAY_WINDOW, SEAL_OVERHEAD
from chatterd.core.keyring import Keyring, KeyringError, encode_key, key_id, parse_key
from chatterd.core.seal import ReplayGuard, Sealer, SealError, boot_id

K1 = bytes(range(32))
K2 = bytes(range(1, 17))
K3 = bytes(range(2, 26))
BODY = b'{"v":1,"from":"a","m":[{"t":"heartbeat"}]}'


def sealer(keys: list[bytes] = [K1], label: str = "", seed: int = 1, boot: int = 7) -> Sealer:  # noqa: B006
    rng = random.Random(seed)
    return Sealer(Keyring(keys), label, salt=rng.randbytes(4), counter=rng.getrandbits(62), boot=boot)


def reason(s: Sealer, data: bytes) -> tuple[str, str]:
    with pytest.raises(SealError) as e:
        s.open(data)
    return e.value.counter, e.value.reason


# ------------------------------------------------------------------ keys and the keyring


def test_keys_are_base64_of_16_24_or_32_bytes() -> None:
    for k in (K1, K2, K3):
        assert parse_key(encode_key(k)) == k
    for bad in ("", "not base64!", encode_key(b"x" * 15), encode_key(b"x" * 33)):
        with pytest.raises(KeyringError):
            parse_key(bad)


def test_the_primary_seals_every_key_opens_and_the_primary_cannot_be_removed() -> None:
    ring = Keyring([K1])
    changes: list[list[bytes]] = []
    ring.on_change = lambda r: changes.append(r.keys)
    assert ring.install(K2) and not ring.install(K2)
    assert ring.primary == K1 and ring.cipher(key_id(K2)) is not None
    with pytest.raises(KeyringError):
        ring.remove(K1)
    with pytest.raises(KeyringError):
        ring.use(K3)  # not installed
    assert ring.use(K2) and ring.primary_id == key_id(K2)
    assert ring.remove(K1) and not ring.remove(K1)
    assert ring.cipher(key_id(K1)) is None
    assert changes == [[K1, K2], [K2, K1], [K2]]
    with pytest.raises(KeyringError):
        Keyring([])


# ------------------------------------------------------------------ one datagram


def test_a_sealed_datagram_opens_with_the_same_key_and_label() -> None:
    a, b = sealer(label="prod"), sealer(label="prod", seed=2)
    data = a.seal(BODY)
    assert data[0] == 0x02 and data[:1] != b"{" and len(data) == len(BODY) + SEAL_OVERHEAD
    assert BODY not in data  # encrypted, not just signed
    opened = b.open(data)
    assert opened.body == BODY and opened.boot == 7


def test_a_receiver_holding_the_key_among_others_opens_it() -> None:
    data = sealer([K2]).seal(BODY)
    assert sealer([K1, K3, K2]).open(data).body == BODY


@pytest.mark.parametrize("where", [0, 1, 5, 17, 30, -1])
def test_a_tampered_byte_is_refused(where: int) -> None:
    data = bytearray(sealer().seal(BODY))
    data[where] ^= 0x01
    counter, why = reason(sealer(seed=3), bytes(data))
    assert counter == "decrypt_failed"
    assert why in ("auth", "unknown_key", "version")


def test_wrong_key_wrong_label_truncated_unknown_key_and_plaintext_are_refused() -> None:
    data = sealer([K1], label="a").seal(BODY)
    assert reason(sealer([K2], label="a"), data) == ("decrypt_failed", "unknown_key")
    assert reason(sealer([K1], label="b"), data) == ("decrypt_failed", "auth")
    assert reason(sealer([K1], label=""), data) == ("decrypt_failed", "auth")
    assert reason(sealer([K1], label="a"), data[: SEAL_OVERHEAD - 1]) == ("decrypt_failed", "truncated")
    assert reason(sealer([K1], label="a"), data[:-1]) == ("decrypt_failed", "auth")
    assert reason(sealer([K1]), BODY) == ("plaintext_refused", "plaintext")
    assert reason(sealer([K1]), b"\x07garbage") == ("decrypt_failed", "version")
    # a key id that matches but a different key (forged header): the tag still fails
    forged = data[:1] + key_id(K1) + data[5:]
    assert reason(sealer([K1], label="a"), forged[:-3] + b"abc") == ("decrypt_failed", "auth")


def test_nonces_never_repeat_within_a_boot_and_the_primary_can_change_mid_run() -> None:
    s = sealer([K1, K2])
    nonces = {s.seal(BODY)[5:17] for _ in range(20_000)}
    assert len(nonces) == 20_000
    s.keyring.use(K2)
    assert sealer([K2]).open(s.seal(BODY)).body == BODY


def test_two_boots_draw_different_salts() -> None:
    salts = {sealer(seed=i).seal(BODY)[5:9] for i in range(200)}
    assert len(salts) == 200


# ------------------------------------------------------------------ replays


def test_a_replayed_datagram_is_refused_once_accepted() -> None:
    a, b = sealer(), sealer(seed=2)
    first, second = a.seal(BODY), a.seal(BODY)
    o2 = b.open(second)
    assert b.accept("a", o2) is None
    assert b.accept("a", b.open(first)) is None  # reordered, still in the window
    assert b.accept("a", b.open(second)) == "duplicate"
    assert b.accept("a", b.open(first)) == "duplicate"


def test_a_datagram_older_than_the_window_is_refused() -> None:
    a, b = sealer(), sealer(seed=2)
    old = a.seal(BODY)
    for _ in range(REPLAY_WINDOW):
        assert b.accept("a", b.open(a.seal(BODY))) is None
    assert b.accept("a", b.open(old)) == "too_old"


def test_an_older_boot_of_a_sender_is_refused_after_a_newer_one() -> None:
    old = sealer(boot=boot_id(1_000, 5), seed=4)
    new = sealer(boot=boot_id(2_000, 1), seed=5)
    r = sealer(seed=6)
    captured = old.seal(BODY)
    assert r.accept("a", r.open(old.seal(BODY))) is None
    assert r.accept("a", r.open(new.seal(BODY))) is None  # restarted
    assert r.accept("a", r.open(captured)) == "old_boot"
    assert r.accept("b", r.open(captured)) is None  # another sender's windows are its own


def test_windows_are_bounded_and_a_forgotten_client_boot_stays_refused() -> None:
    g = ReplayGuard(max_nodes=3, max_clients=3)
    for i in range(10):
        assert g.check(f"n{i}", 1, 1) is None
    assert len(g.nodes) == 3
    for boot in range(1, 11):
        assert g.check(None, boot, 5) is None
    assert len(g.clients) == 3
    assert g.check(None, 3, 5) == "old_boot"  # evicted, and below the floor
    assert g.check(None, 10, 5) == "duplicate"
    assert g.check(None, 11, 0) is None


def test_window_bitmap_bounds_and_jumps() -> None:
    g = ReplayGuard()
    assert g.check("a", 1, 10) is None
    assert g.check("a", 1, 10 + 5 * REPLAY_WINDOW) is None  # a jump resets the bitmap
    assert g.check("a", 1, 10) == "too_old"
    assert g.check("a", 1, 10 + 5 * REPLAY_WINDOW - 1) is None
    assert g.check("a", 1, 10 + 5 * REPLAY_WINDOW - 1) == "duplicate"
    assert g.nodes["a"].bits < 1 << REPLAY_WINDOW


def test_boot_ids_grow_with_their_start_and_stay_in_63_bits() -> None:
    assert boot_id(2_000, 0) > boot_id(1_999, 0xFFFF)
    assert boot_id(2**63, 0xFFFF) < 2**63


def test_an_answer_goes_in_the_key_its_destination_used_while_we_hold_it() -> None:
    old, new = sealer([K1]), sealer([K2, K1], seed=2)  # new seals with K2, still holds K1
    addr = ("198.18.0.9", 2428)
    assert new.reply_key(addr) is None
    opened = new.open(old.seal(b'{"v":1}'))
    assert opened.kid == key_id(K1)
    new.heard(addr, opened.kid)
    assert new.reply_key(addr) == key_id(K1)
    assert old.open(new.seal(b"{}", new.reply_key(addr))).body == b"{}"  # the old node reads it
    assert new.open(new.seal(b"{}", key_id(K3))).kid == key_id(K2)  # a key we lack: the primary
    new.keyring.remove(K1)
    assert new.reply_key(addr) is None  # once removed, never used again


def test_the_keyring_holds_at_most_max_keys() -> None:
    from chatterd.core.config import MAX_KEYS

    ring = Keyring([bytes([i]) * 16 for i in range(MAX_KEYS)])
    with pytest.raises(KeyringError, match="full"):
        ring.install(bytes([200]) * 16)
