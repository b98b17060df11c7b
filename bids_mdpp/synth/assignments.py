"""Options written as ``NAME=NUMBER,NAME=NUMBER`` (``--load-mix``, ``--lesion-floor``, …)."""
from __future__ import annotations

from collections.abc import Callable, Iterator


def named_numbers(text: str, form: str,
                  number_of: Callable[[str], str]) -> Iterator[tuple[str, str, float]]:
    """Each non-empty comma-separated part of ``text`` as ``(part, name, number)``.

    ``form`` shows the expected form in messages (``"CLASS=SHARE (e.g. high=0.2)"``);
    ``number_of(name)`` names the number (``"the share of 'high'"``).  Raises ValueError for a
    part without ``=`` or a value that is not a number.
    """
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep:
            raise ValueError(f"{part!r} is not {form}")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{number_of(name)} is not a number: {value.strip()!r}") from None
        yield part, name, number
