"""Derived stems from +/- rules: values, list form, chaining, gradients and errors."""

from __future__ import annotations

import pytest
import torch

from torchbss.signal import derive_stems


@pytest.fixture
def stems() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    names = ["vocals", "drums", "bass", "other"]
    return {name: torch.randn(2, 2, 50, generator=generator) for name in names}


def test_rules_and_list_form(stems: dict[str, torch.Tensor]) -> None:
    mixture = sum(stems.values())
    out = derive_stems(
        stems,
        mixture,
        {
            "instrumental": "mixture - vocals",
            "drums_and_bass": "drums + bass",
            "rhythm": ["drums", "bass"],
            "odd": "- bass+drums -other",
        },
    )
    assert list(out)[:4] == list(stems) and set(out) == {
        *stems,
        "instrumental",
        "drums_and_bass",
        "rhythm",
        "odd",
    }
    torch.testing.assert_close(out["instrumental"], stems["drums"] + stems["bass"] + stems["other"])
    torch.testing.assert_close(out["drums_and_bass"], stems["drums"] + stems["bass"])
    torch.testing.assert_close(out["rhythm"], out["drums_and_bass"])
    torch.testing.assert_close(out["odd"], stems["drums"] - stems["bass"] - stems["other"])
    assert "instrumental" not in stems  # the input dict is left alone


def test_rules_may_use_earlier_derived_stems_and_no_mixture(
    stems: dict[str, torch.Tensor],
) -> None:
    out = derive_stems(stems, rules={"rhythm": "drums + bass", "band": "rhythm + other"})
    torch.testing.assert_close(out["band"], stems["drums"] + stems["bass"] + stems["other"])
    copy = derive_stems(stems, rules={"lead": "vocals"})["lead"]
    assert torch.equal(copy, stems["vocals"]) and copy is not stems["vocals"]


def test_gradients_flow(stems: dict[str, torch.Tensor]) -> None:
    vocals = stems["vocals"].clone().requires_grad_()
    mixture = torch.randn(2, 2, 50, requires_grad=True)
    out = derive_stems({"vocals": vocals}, mixture, {"instrumental": "mixture - vocals"})
    out["instrumental"].sum().backward()
    assert torch.all(vocals.grad == -1) and torch.all(mixture.grad == 1)


@pytest.mark.parametrize(
    ("rules", "error", "match"),
    [
        ({"x": "mixture - guitar"}, ValueError, r"unknown stem 'guitar'; known stems: \['bass'"),
        ({"x": ["drums", "piano"]}, ValueError, "unknown stem 'piano'"),
        ({"x": "vocals +"}, ValueError, "malformed"),
        ({"x": "vocals bass"}, ValueError, "malformed"),
        ({"x": "2 * vocals"}, ValueError, "malformed"),
        ({"x": "vocals -- bass"}, ValueError, "malformed"),
        ({"x": "(vocals)"}, ValueError, "malformed"),
        ({"x": ""}, ValueError, "empty rule"),
        ({"x": []}, ValueError, "non-empty list"),
        ({"x": 3}, TypeError, "expression string"),
        ({"vocals": "drums + bass"}, ValueError, "already taken"),
        ({"mixture": "drums + bass"}, ValueError, "already taken"),
    ],
)
def test_bad_rules(stems: dict[str, torch.Tensor], rules, error, match) -> None:
    with pytest.raises(error, match=match):
        derive_stems(stems, torch.zeros(2, 2, 50), rules)


def test_bad_inputs(stems: dict[str, torch.Tensor]) -> None:
    with pytest.raises(ValueError, match="no mixture was given"):
        derive_stems(stems, None, {"x": "mixture - vocals"})
    with pytest.raises(ValueError, match="mixture has shape"):
        derive_stems(stems, torch.zeros(2, 50), {"x": "mixture - vocals"})
    with pytest.raises(ValueError, match="same shape"):
        derive_stems({**stems, "piano": torch.zeros(3)}, None, {})
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        derive_stems({"vocals": [1.0]}, None, {})
    with pytest.raises(TypeError, match="stems must be a dict"):
        derive_stems([torch.zeros(2)], None, {})
    # a stem named 'mixture' was shadowed by the mixture argument in every rule
    with pytest.raises(ValueError, match="no stem may be named 'mixture'"):
        derive_stems({**stems, "mixture": torch.zeros_like(stems["vocals"])}, None, {})
    with pytest.raises(TypeError, match="rule names must be non-empty strings"):
        derive_stems(stems, None, {3: "vocals"})
