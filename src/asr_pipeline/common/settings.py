"""The one check of a parameter section's keys: unknown keys and missing ones are refused by name.

Every setting lives in ``conf/``, once, and no parser quietly ignores a key it does not know: a
misspelt setting (``n_mel`` for ``n_mels``) would otherwise leave the value it meant to change at
conf/base's, and the run would go on with another configuration than the one asked for. Each
reader of a section (the configs' ``from_params`` / ``from_dict``, and the nodes that take a
``params:`` section as it is) calls :func:`check_settings` before it reads a value, so that every
refusal reads the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def check_settings(
    section: str,
    values: Mapping[str, Any],
    known: Iterable[str],
    required: Iterable[str] = (),
) -> None:
    """Refuse the keys of ``values`` (the ``section`` parameters) that are not ``known``, then the
    ``required`` keys it lacks, with a :class:`ValueError` that names them.

    ``required`` is the subset of ``known`` that must be there (none by default: a reader that
    has a use for a key's absence, or reads it with a fallback, lists only what it cannot do
    without). ``section`` is how the message names the section, e.g. ``beam_search.tune``.
    """
    known = set(known)
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown {section} setting(s) {sorted(unknown)}; known: {sorted(known)}")
    missing = set(required) - set(values)
    if missing:
        raise ValueError(f"missing {section} setting(s) {sorted(missing)}")


def dataclass_from_params(cls: type[T], section: str, params: Mapping[str, Any]) -> T:
    """``cls(**params)`` for a dataclass whose every field is a setting of ``section``, after
    :func:`check_settings` (all fields required, no other key)."""
    names = [f.name for f in fields(cls)]
    check_settings(section, params, known=names, required=names)
    return cls(**params)
