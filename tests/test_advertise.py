"""The advertised address on a wildcard --listen: never loopback when a remote seed routes,
the interface that routes to the seed first, then this host's addresses; and the IPv4-mapped
addresses of a dual-stack socket seen as plain IPv4."""

from __future__ import annotations

import socket

import pytest

from chatterd import advertise, udp


class Lines:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, object]]] = []

    def info(self, event: str, **kw: object) -> None:
        self.lines.append(("info", event, kw))

    def warning(self, event: str, **kw: object) -> None:
        self.lines.append(("warning", event, kw))


def test_given_and_specific_addresses_win() -> None:
    assert advertise.choose(("0.0.0.0", 2428), [], ("198.18.0.7", 2428)).reason == "given with --advertise"
    c = advertise.choose(("198.18.0.3", 2428), [("198.18.0.1", 2428)], None)
    assert c.addr == ("198.18.0.3", 2428) and c.reason == "the --listen address"


def test_the_interface_that_routes_to_the_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    routes = {"198.18.0.1": "198.18.0.4", "198.19.0.1": "198.19.0.4"}
    monkeypatch.setattr(advertise, "route_source", lambda dest: routes.get(dest[0]))
    monkeypatch.setattr(advertise, "own_addresses", lambda prefer_v6=False: ["198.19.0.4", "198.18.0.4"])
    c = advertise.choose(("0.0.0.0", 2428), [("198.18.0.1", 2428)], None)
    assert c.addr == ("198.18.0.4", 2428) and "routes to the seed 198.18.0.1:2428" in c.reason
    c = advertise.choose(("0.0.0.0", 2428), [("198.19.0.1", 2428)], None)
    assert c.addr == ("198.19.0.4", 2428)


def test_a_loopback_route_to_a_remote_seed_is_never_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(advertise, "route_source", lambda dest: "127.0.1.1")
    monkeypatch.setattr(advertise, "own_addresses", lambda prefer_v6=False: ["198.18.0.9"])
    c = advertise.choose(("0.0.0.0", 2428), [("198.18.0.1", 2428)], None)
    assert c.addr == ("198.18.0.9", 2428) and c.reason == "this host's only address"


def test_without_seeds_this_hosts_addresses_then_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        advertise, "own_addresses", lambda prefer_v6=False: ["2001:2::5", "198.18.0.5"][:: 1 if prefer_v6 else -1]
    )
    c = advertise.choose(("0.0.0.0", 2428), [], None)
    assert c.addr == ("198.18.0.5", 2428) and c.ambiguous
    log = Lines()
    advertise.log_choice(log, c, [])
    assert log.lines[0][0] == "warning" and "give --advertise" in str(log.lines[0][2]["detail"])
    assert advertise.choose(("::", 2428), [], None).addr == ("2001:2::5", 2428)
    monkeypatch.setattr(advertise, "own_addresses", lambda prefer_v6=False: [])
    assert advertise.choose(("0.0.0.0", 2428), [], None).addr == ("127.0.0.1", 2428)
    assert advertise.choose(("::", 2428), [], None).addr == ("::1", 2428)


def test_a_loopback_choice_with_remote_seeds_is_a_warning() -> None:
    log = Lines()
    advertise.log_choice(log, advertise.Choice(("127.0.0.1", 2428), "x"), [("198.18.0.1", 2428)])
    assert log.lines[0][0] == "warning" and "cannot reach it" in str(log.lines[0][2]["detail"])
    log = Lines()
    advertise.log_choice(log, advertise.Choice(("127.0.0.1", 2428), "x"), [("127.0.0.1", 2429)])
    assert log.lines[0][0] == "info"


def test_this_hosts_addresses_are_never_loopback_or_link_local() -> None:
    for addr in advertise.own_addresses() + advertise.own_addresses(prefer_v6=True):
        assert not udp.is_loopback(addr) and not addr.startswith("fe80")
    assert advertise.route_source(("127.0.0.1", 9)) == "127.0.0.1"  # a real lookup: nothing is sent


def test_dual_stack_addresses_are_plain_ipv4_for_the_core() -> None:
    assert udp.from_socket(("::ffff:198.18.0.2", 2428, 0, 0)) == ("198.18.0.2", 2428)
    assert udp.from_socket(("2001:2::1", 2428, 0, 0)) == ("2001:2::1", 2428)
    with (
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s6,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s4,
    ):
        assert udp.to_socket(s6, ("198.18.0.2", 2428)) == ("::ffff:198.18.0.2", 2428)
        assert udp.to_socket(s6, ("2001:2::1", 2428)) == ("2001:2::1", 2428)
        assert udp.to_socket(s4, ("198.18.0.2", 2428)) == ("198.18.0.2", 2428)
