"""How a tool's output is matched against the cases of a conditional rule.

The one rule, documented in the README ("Matching output cases"):
- the output is first turned into text: a string stays as it is; True/False become
  "true"/"false"; None becomes "null"; numbers, lists and mappings become their JSON text
  (with `run: {output_text: python}`, as imported Letta agents have: Python's `str()`, which is
  what Letta matches: "True", "None", "{'a': 1}");
- a boolean key matches the text "true" / "false" in any letter case, ignoring surrounding
  white space;
- a number key (int or float) matches text that parses as a number equal to it
  (so the key 1 matches "1", "1.0" and " 1 ");
- a string key matches the text exactly (case and white space count): the key "True" matches
  only the output "True". Letta's JSON-serialised keys are strings, so imported rules keep
  Letta's exact-string meaning.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from typing import Any


def output_text(value: Any) -> str:
    """The text a conditional rule matches against (see the module docstring)."""
    if isinstance(value, str):
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def python_text(value: Any) -> str:
    """The text Letta matches against: Python's `str()` of the return value (`run:
    {output_text: python}`). A mapping is read back from the JSON Letta wraps it in first (so
    its keys are strings), as Letta's conditional rule reads the wrapped `message` field."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        with contextlib.suppress(TypeError, ValueError):  # not JSON-friendly: str() it as is
            value = json.loads(json.dumps(value, ensure_ascii=False, default=str))
    return str(value)


TEXT_FORMS: dict[str, Callable[[Any], str]] = {"json": output_text, "python": python_text}


def _as_number(text: str) -> float | None:
    try:
        number = float(text.strip())
    except ValueError:
        return None
    return None if math.isnan(number) else number


def case_matches(key: bool | int | float | str, text: str) -> bool:
    """Whether one output-case key matches the output text."""
    if isinstance(key, bool):
        return text.strip().lower() == ("true" if key else "false")
    if isinstance(key, int | float):
        number = _as_number(text)
        return number is not None and number == key
    return text == key


def first_match(
    keys: tuple[bool | int | float | str, ...],
    value: Any,
    text_of: Callable[[Any], str] = output_text,
) -> int | None:
    """Index of the first key that matches the output `value`, None when none does."""
    text = text_of(value)
    for index, key in enumerate(keys):
        if case_matches(key, text):
            return index
    return None


def compile_cases(
    keys: tuple[bool | int | float | str, ...], text_of: Callable[[Any], str] = output_text
) -> Callable[[Any], int | None]:
    """A matcher equivalent to `first_match(keys, value, text_of)`, one look-up per key type.

    String keys match by exact text, boolean keys by the stripped lower-case text, number
    keys by the parsed number (a dict finds numeric equality: 1 and 1.0 hash alike); the
    first matching key of all is the smallest index among those hits.
    """
    exact: dict[str, int] = {}
    bools: dict[str, int] = {}
    numbers: dict[int | float, int] = {}
    for index, key in enumerate(keys):
        if isinstance(key, bool):
            bools.setdefault("true" if key else "false", index)
        elif isinstance(key, int | float):
            if not (isinstance(key, float) and math.isnan(key)):
                numbers.setdefault(key, index)
        else:
            exact.setdefault(key, index)

    def match(value: Any) -> int | None:
        text = value if type(value) is str else text_of(value)
        best = exact.get(text)
        if bools:
            hit = bools.get(text.strip().lower())
            if hit is not None and (best is None or hit < best):
                best = hit
        if numbers:
            number = _as_number(text)
            if number is not None:
                hit = numbers.get(number)
                if hit is not None and (best is None or hit < best):
                    best = hit
        return best

    return match
