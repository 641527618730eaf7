"""``chatterd rtt`` without a node: the arithmetic on the API's answer, and a node's answer
that is not coordinates (the command says so in one line, it does not crash)."""

import argparse
from typing import Any

import pytest

from chatterd import coords
from chatterd.apiclient import CtlError
from chatterd.core.coordinates import Coordinate


class FakeClient:
    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def get(self, path: str) -> Any:
        assert path == coords.PATH
        return self.answer


def row(name: str, x: float, height: float = 0.001) -> dict[str, Any]:
    return coords.coordinate_row(name, Coordinate(vec=(x,) + (0.0,) * 7, error=0.2, height=height))


def run(answer: Any, *nodes: str, json: bool = False) -> int:
    args = argparse.Namespace(nodes=list(nodes), json=json)
    return coords.cmd_rtt(FakeClient(answer), args)  # type: ignore[arg-type]


def test_rtt_from_the_asked_node_and_between_two(capsys: pytest.CaptureFixture[str]) -> None:
    answer = {"node": "a", "enabled": True, "coordinates": [row("a", 0.0), row("b", 0.004), row("c", -0.002)]}
    assert run(answer, "b") == 0
    assert capsys.readouterr().out == "Estimated a <-> b rtt: 6.000 ms (from a's coordinates)\n"
    assert run(answer, "b", "c", json=True) == 0
    assert capsys.readouterr().out == '{"a": "b", "b": "c", "rtt_s": 0.008}\n'


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "b", "vec": [0.0] * 7, "error": 0.1, "adjustment": 0.0, "height": 0.001},
        {"name": "b", "vec": ["x"] * 8, "error": 0.1, "adjustment": 0.0, "height": 0.001},
        {"name": "b", "vec": [1e300] * 8, "error": 0.1, "adjustment": 0.0, "height": 0.001},
        {"name": "b", "vec": [0.0] * 8, "error": "nan", "adjustment": 0.0, "height": 0.001},
        {"name": "b", "vec": [0.0] * 8, "adjustment": 0.0, "height": 0.001},
    ],
)
def test_a_malformed_answer_is_one_error(bad: dict[str, Any]) -> None:
    with pytest.raises(CtlError, match="malformed coordinate"):
        run({"node": "a", "coordinates": [row("a", 0.0), bad]}, "b")


def test_unknown_node_and_coordinates_off() -> None:
    with pytest.raises(CtlError, match="has no coordinate for zz yet") as e:
        run({"node": "a", "enabled": True, "coordinates": [row("a", 0.0)]}, "zz")
    assert e.value.status == 1
    with pytest.raises(CtlError, match="coordinates are off"):
        run({"node": "a", "enabled": False, "coordinates": []}, "b")
    with pytest.raises(CtlError, match="one or two") as e:
        run({"node": "a", "coordinates": []}, "a", "b", "c")
    assert e.value.status == 2
