"""bnkit.checks: a claim prints one line when it holds and raises ClaimError with the evidence when not."""

import numpy as np
import pytest
import torch

from bnkit.checks import ClaimError, claim, claim_close, claim_order


def test_claim_prints_one_line_when_it_holds(capsys):
    claim("one is less than two", 1 < 2)
    assert capsys.readouterr().out == "✓ one is less than two\n"


def test_claim_accepts_numpy_and_torch_booleans(capsys):
    claim("numpy", np.bool_(True))
    claim("torch", torch.tensor(True))
    assert capsys.readouterr().out.count("✓") == 2


def test_claim_raises_an_assertion_error_and_prints_nothing(capsys):
    with pytest.raises(ClaimError, match="does not hold: two is less than one"):
        claim("two is less than one", 2 < 1)
    assert isinstance(ClaimError("x"), AssertionError)
    assert capsys.readouterr().out == ""


def test_claim_close_uses_numpy_tolerances(capsys):
    claim_close("close", torch.tensor([1.0, 2.0]), [1.0, 2.0 + 1e-9], rtol=1e-8)
    assert capsys.readouterr().out == "✓ close\n"
    with pytest.raises(ClaimError, match="Max absolute difference"):
        claim_close("not close", [1.0], [1.1], rtol=1e-3)


def test_claim_order_checks_the_seed_ranges(capsys):
    claim_order("a above b", [3.0, 4.0, 5.0], [1.0, 2.0, 2.5])
    claim_order("indistinguishable", [1.0, 3.0], [2.0, 4.0], expected="indistinguishable")
    assert capsys.readouterr().out.splitlines() == ["✓ a above b", "✓ indistinguishable"]
    with pytest.raises(ClaimError, match="expected a above b, got indistinguishable"):
        claim_order("overlapping", [1.0, 3.0], [2.0, 4.0])
    with pytest.raises(ValueError, match="expected must be"):
        claim_order("typo", [1.0], [0.0], expected="higher")
