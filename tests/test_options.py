"""The one parser of repeatable ``KEY=VALUE`` options and the three options built on it: each refuses a
malformed value with a UserError that names the option and the form it needs."""

from __future__ import annotations

import pytest

from moirescale.analysis.commands import _mean_guess
from moirescale.errors import UserError, split_option
from moirescale.train.commands import _parse_opts
from moirescale.use.error_map import parse_bins


def test_split_option_returns_stripped_key_and_value():
    assert split_option(" theta = 0.083 ", "--x", "K=V", "a=1") == ("theta", "0.083")
    assert parse_bins([" 7 "]) == (7, {})  # a bare N (no key) is --bins' own form
    assert split_option("a=b=c", "--x", "K=V", "a=1") == ("a", "b=c")  # the first '=' splits


@pytest.mark.parametrize("item", ["theta", "=3", " =3"])
def test_split_option_refuses_a_missing_key(item):
    with pytest.raises(UserError, match=r"--x .*need K=V, e\.g\. a=1"):
        split_option(item, "--x", "K=V", "a=1")


def test_the_three_options_parse_and_refuse():
    assert _parse_opts(["min_steps=40", "min_epochs=2.5"]) == {"min_steps": 40, "min_epochs": 2.5}
    assert _mean_guess(["theta=0.083", "J = 0.084"]) == {"theta": 0.083, "J": 0.084}
    assert parse_bins(["4", "theta=6"]) == (4, {"theta": 6})
    for call, arg, match in [
        (_parse_opts, "min_steps", "--schedule-opt 'min_steps': need KEY=VALUE"),
        (_parse_opts, "min_steps=many", "is not a number"),
        (_mean_guess, "theta", "--mean-guess 'theta': need LABEL=MSE"),
        (_mean_guess, "theta=-1", "finite MSE > 0"),
        (parse_bins, "=3", "--bins '=3': need N or LABEL=N"),
        (parse_bins, "theta=0", "1 <= N <= 1000"),
    ]:
        with pytest.raises(UserError, match=match):
            call([arg])
