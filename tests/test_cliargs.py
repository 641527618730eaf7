"""The command lines' number types: finite and above 0, else one clear argparse error."""

from __future__ import annotations

import argparse

import pytest

from chatterd.cliargs import positive_float, positive_int


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "-inf", "x"])
def test_not_a_positive_finite_float(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        positive_float(text)


def test_positive_numbers_pass() -> None:
    assert positive_float("0.25") == 0.25 and positive_int("3") == 3
    with pytest.raises(argparse.ArgumentTypeError):
        positive_int("2.5")
