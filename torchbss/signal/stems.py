"""Derived stems: sums and differences of separated stems and the mixture.

For example ``instrumental = mixture - vocals`` or ``rhythm = drums + bass``, the usual way to
get an accompaniment track from a vocals model, or a coarser stem set from a finer one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch

__all__ = ["derive_stems"]

_TERM = re.compile(r"\s*([+-])?\s*([A-Za-z_][A-Za-z0-9_]*)\s*")
_EXAMPLE = "e.g. 'mixture - vocals' or 'drums + bass'"


def _parse(name: str, rule: object) -> list[tuple[int, str]]:
    """Parse a rule into ``[(sign, stem_name), ...]``."""
    if isinstance(rule, str):
        terms: list[tuple[int, str]] = []
        pos = 0
        while pos < len(rule):
            match = _TERM.match(rule, pos)
            # a sign is required between terms, optional before the first one
            if match is None or match.end() == pos or (terms and match.group(1) is None):
                raise ValueError(
                    f"malformed rule for derived stem {name!r}: {rule!r} (problem at character "
                    f"{pos}); expected stem names or 'mixture' joined by + or -, {_EXAMPLE}"
                )
            terms.append((-1 if match.group(1) == "-" else 1, match.group(2)))
            pos = match.end()
        if not terms:
            raise ValueError(f"empty rule for derived stem {name!r}; expected {_EXAMPLE}")
        return terms
    if isinstance(rule, Sequence) and not isinstance(rule, (bytes, bytearray)):
        if len(rule) == 0 or not all(isinstance(term, str) for term in rule):
            raise ValueError(
                f"rule for derived stem {name!r} must be a non-empty list of stem names (summed), "
                f"got {rule!r}"
            )
        return [(1, term) for term in rule]
    raise TypeError(
        f"rule for derived stem {name!r} must be an expression string ({_EXAMPLE}) or a list of "
        f"stem names to sum, got {type(rule).__name__}"
    )


def derive_stems(
    stems: Mapping[str, torch.Tensor],
    mixture: torch.Tensor | None = None,
    rules: Mapping[str, str | Sequence[str]] | None = None,
) -> dict[str, torch.Tensor]:
    """Add stems derived by ``+``/``-`` rules from separated stems and the mixture.

    Rules are evaluated in order and may use stems derived by earlier rules. The word
    ``mixture`` names the ``mixture`` argument. A rule is either an expression such as
    ``"mixture - vocals"`` or ``"- bass + drums"`` (names joined by ``+``/``-``; no numbers or
    parentheses), or a list of names such as ``["drums", "bass"]`` meaning their sum.

    Args:
        stems: separated stems by name, all of the same shape, e.g. ``(batch, channels,
            samples)``.
        mixture: the mixture, same shape as the stems; needed only by rules naming ``mixture``.
        rules: ``{derived_name: rule}``.

    Returns:
        A new dict with the input stems followed by the derived ones (the input is not modified).

    Example:
        >>> vocals, drums, bass = torch.ones(3, 2, 10).unbind(0)
        >>> out = derive_stems(
        ...     {"vocals": vocals, "drums": drums, "bass": bass},
        ...     mixture=vocals + drums + bass,
        ...     rules={"instrumental": "mixture - vocals", "rhythm": ["drums", "bass"]},
        ... )
        >>> sorted(out)
        ['bass', 'drums', 'instrumental', 'rhythm', 'vocals']
    """
    if not isinstance(stems, Mapping):
        raise TypeError(f"stems must be a dict of name -> tensor, got {type(stems).__name__}")
    rules = {} if rules is None else rules
    if not isinstance(rules, Mapping):
        raise TypeError(f"rules must be a dict of name -> rule, got {type(rules).__name__}")
    if "mixture" in stems:  # a rule naming it would read the mixture argument instead
        raise ValueError("no stem may be named 'mixture': rules use that name for the mixture")
    bad = [name for name in rules if not isinstance(name, str) or not name]
    if bad:
        raise TypeError(f"rule names must be non-empty strings, got {bad}")
    shape = None
    for name, value in stems.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"stem {name!r} must be a torch.Tensor, got {type(value).__name__}")
        if shape is not None and value.shape != shape:
            raise ValueError(
                f"all stems must have the same shape; stem {name!r} has shape "
                f"{tuple(value.shape)}, expected {tuple(shape)}"
            )
        shape = value.shape
    if mixture is not None:
        if not isinstance(mixture, torch.Tensor):
            raise TypeError(f"mixture must be a torch.Tensor, got {type(mixture).__name__}")
        if shape is not None and mixture.shape != shape:
            raise ValueError(
                f"mixture has shape {tuple(mixture.shape)}, expected the stems' shape "
                f"{tuple(shape)}"
            )

    out = dict(stems)
    for name, rule in rules.items():
        if name in out or name == "mixture":
            raise ValueError(f"derived stem name {name!r} is already taken; choose another name")
        terms = _parse(name, rule)
        total = None
        for sign, term in terms:
            if term == "mixture":
                if mixture is None:
                    raise ValueError(
                        f"rule for derived stem {name!r} uses 'mixture' but no mixture was given"
                    )
                value = mixture
            elif term in out:
                value = out[term]
            else:
                known = sorted([*out, "mixture"] if mixture is not None else out)
                raise ValueError(
                    f"rule for derived stem {name!r} names unknown stem {term!r}; known stems: "
                    f"{known}"
                )
            if total is None:
                total = value if sign > 0 else -value
            else:
                total = total + value if sign > 0 else total - value
        out[name] = total.clone() if len(terms) == 1 and terms[0][0] > 0 else total
    return out
