"""Random provider: a seeded policy calling a uniformly chosen allowed tool with valid arguments."""

from __future__ import annotations

import json
import math
import random as _random
import string
from collections.abc import Mapping
from typing import Any

from engine.providers.base import ModelReply, ModelRequest, ToolCall
from engine.providers.errors import ProviderConfigError

__all__ = ["RandomProvider", "generate_value"]

DEFAULT_TEXT_PROBABILITY = 0.1
END_TEXT = "Done."

# Beyond this nesting depth only required properties and minimum array lengths are generated,
# so recursive schemas ($ref cycles) terminate.
_MAX_DEPTH = 6
_ALPHABET = string.ascii_lowercase + string.digits


class RandomProvider:
    """A seeded random policy, for fuzzing rule files and offline demos.

    Each step: when the call is not forced, end the run with a text reply (`END_TEXT`) with
    probability `text_probability` (default 0.1, 0 to never stop on its own); otherwise pick
    one tool uniformly among `allowed` and call it with arguments generated from its JSON
    Schema (see `generate_value`). One call per reply. Ids are `call_1`, `call_2`, ...
    The same seed and the same sequence of requests give the same replies.
    """

    def __init__(
        self, seed: int | None = None, *, text_probability: float = DEFAULT_TEXT_PROBABILITY
    ) -> None:
        self.seed = 0 if seed is None else seed
        self.name = f"random:{self.seed}"
        if not 0.0 <= text_probability <= 1.0:
            raise ProviderConfigError(
                f"text_probability must be within [0, 1], got {text_probability}",
                provider=self.name,
            )
        self.text_probability = text_probability
        self._rng = _random.Random(self.seed)
        self._calls = 0

    async def aclose(self) -> None:
        """Nothing to release; present so every provider can be closed the same way."""

    async def complete(self, request: ModelRequest) -> ModelReply:
        # Draw the stop decision first, always, so the stream of draws depends only on the
        # sequence of requests (not on which branch a previous step took).
        stop = self._rng.random() < self.text_probability
        if (stop and not request.force) or request.answer_only:
            return ModelReply(text=END_TEXT, tool_calls=(), tool_choice_sent=None)
        name = self._rng.choice(request.allowed)
        spec = request.tool(name)
        schema: Any = spec.parameters if spec is not None else {"type": "object"}
        args = generate_value(schema, self._rng)
        self._calls += 1
        call = ToolCall(id=f"call_{self._calls}", name=name, arguments=json.dumps(args))
        return ModelReply(text=None, tool_calls=(call,), tool_choice_sent=None)


def generate_value(schema: Any, rng: _random.Random) -> Any:
    """A random value valid against `schema` (for the supported subset).

    Supported: `type` (string, integer, number, boolean, null, array, object, or a list of
    them), `enum`, `const`, `properties` / `required` / `additionalProperties`, `items` /
    `prefixItems` / `minItems` / `maxItems` / `uniqueItems`, `minLength` / `maxLength`,
    `minimum` / `maximum` / `exclusiveMinimum` / `exclusiveMaximum` / `multipleOf`, local `$ref`
    (`#/...`), `allOf` (shallow merge), `anyOf` / `oneOf` (one branch chosen; overlapping
    `oneOf` branches may then match twice), and the formats date, date-time, email, uri, uuid.
    Not supported: `pattern`, `not`, `if`/`then`, `dependentRequired`, `contains`.
    """
    return _Generator(schema, rng).value(schema, 0)


class _Generator:
    def __init__(self, root: Any, rng: _random.Random) -> None:
        self.root = root
        self.rng = rng

    def value(self, schema: Any, depth: int) -> Any:
        if schema is True or schema == {}:
            return self._any_scalar()
        if not isinstance(schema, Mapping):
            raise ProviderConfigError(
                f"cannot generate a value for schema {schema!r}", provider="random"
            )
        schema = self._resolve(schema)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return self.rng.choice(list(schema["enum"]))
        combined = self._combined(schema)
        if combined is not None:
            return self.value(combined, depth)
        return self._typed(schema, depth)

    def _combined(self, schema: Mapping[str, Any]) -> dict[str, Any] | None:
        """The schema an `allOf` stands for (all merged), or an `anyOf` / `oneOf` (one branch
        chosen, merged with the rest); None without either."""
        if "allOf" in schema:
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for sub in schema["allOf"]:
                merged = _merge(merged, self._resolve(sub))
            return merged
        for key in ("anyOf", "oneOf"):
            if key in schema:
                branch = self._resolve(self.rng.choice(list(schema[key])))
                rest = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
                return _merge(rest, branch)
        return None

    def _typed(self, schema: Mapping[str, Any], depth: int) -> Any:
        match self._type_of(schema):
            case "object":
                return self._object(schema, depth)
            case "array":
                return self._array(schema, depth)
            case "string":
                return self._string(schema)
            case "integer":
                return self._integer(schema)
            case "number":
                return self._number(schema)
            case "boolean":
                return self.rng.random() < 0.5
            case "null":
                return None
            case _:
                return self._any_scalar()

    def _resolve(self, schema: Any) -> Any:
        seen = 0
        while isinstance(schema, Mapping) and "$ref" in schema:
            ref = schema["$ref"]
            target = self._target(ref)
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = _merge(rest, target) if rest else target
            seen += 1
            if seen > 50:
                raise ProviderConfigError(f"$ref loop at {ref!r}", provider="random")
        return schema

    def _target(self, ref: Any) -> Any:
        """What a local `$ref` (a JSON pointer into the root schema) points at."""
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise ProviderConfigError(
                f"only local $ref is supported, got {ref!r}", provider="random"
            )
        target: Any = self.root
        for part in [p for p in ref[1:].split("/") if p]:
            target = target[part.replace("~1", "/").replace("~0", "~")]
        return target

    def _type_of(self, schema: Mapping[str, Any]) -> str | None:
        t = schema.get("type")
        if isinstance(t, list):
            # Prefer a non-null type so generated arguments carry information.
            non_null = [str(x) for x in t if x != "null"]
            return self.rng.choice(non_null or ["null"])
        if isinstance(t, str):
            return t
        if "properties" in schema or "required" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema:
            return "array"
        return None

    def _any_scalar(self) -> Any:
        return self.rng.choice(
            [self._word(1, 8), self.rng.randint(0, 100), self.rng.random() < 0.5]
        )

    def _word(self, lo: int, hi: int) -> str:
        return "".join(self.rng.choice(_ALPHABET) for _ in range(self.rng.randint(lo, hi)))

    def _object(self, schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
        props: Mapping[str, Any] = schema.get("properties", {})
        required = list(schema.get("required", []))
        out: dict[str, Any] = {}
        for name, sub in props.items():
            if name in required or (depth < _MAX_DEPTH and self.rng.random() < 0.5):
                out[name] = self.value(sub, depth + 1)
        extra = schema.get("additionalProperties", True)
        for name in required:
            if name not in out:
                out[name] = self.value(extra if isinstance(extra, Mapping) else {}, depth + 1)
        return out

    def _array(self, schema: Mapping[str, Any], depth: int) -> list[Any]:
        prefix = list(schema.get("prefixItems", []))
        items = schema.get("items", {})
        if isinstance(items, list):  # draft 4-7 tuple form
            prefix, items = items, schema.get("additionalItems", {})
        lo = int(schema.get("minItems", 0))
        hi = int(schema.get("maxItems", max(lo, len(prefix)) + 3))
        if depth >= _MAX_DEPTH:
            hi = max(lo, min(hi, len(prefix)))
        n = self.rng.randint(lo, max(lo, hi))
        unique = bool(schema.get("uniqueItems", False))
        out: list[Any] = []
        attempts = 0
        while len(out) < n and attempts < n * 20 + 20:
            attempts += 1
            i = len(out)
            if i < len(prefix):
                sub: Any = prefix[i]
            elif items is False:
                break
            else:
                sub = items
            v = self.value(sub, depth + 1)
            if unique and any(_json_equal(v, w) for w in out):
                continue
            out.append(v)
        return out

    def _string(self, schema: Mapping[str, Any]) -> str:
        fmt = schema.get("format")
        r = self.rng
        if fmt in ("date", "date-time"):
            day = f"20{r.randint(10, 39)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"
            if fmt == "date":
                return day
            return f"{day}T{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:00Z"
        if fmt == "email":
            return f"{self._word(3, 8)}@example.com"
        if fmt in ("uri", "url"):
            return f"https://example.com/{self._word(1, 8)}"
        if fmt == "uuid":
            h = f"{r.getrandbits(128):032x}"
            return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:]}"
        lo = int(schema.get("minLength", 0))
        hi = int(schema.get("maxLength", max(lo, 1) + 11))
        return "".join(self.rng.choice(_ALPHABET) for _ in range(self.rng.randint(lo, max(lo, hi))))

    def _bounds(self, schema: Mapping[str, Any]) -> tuple[float | None, bool, float | None, bool]:
        lo, lo_ex = schema.get("minimum"), False
        hi, hi_ex = schema.get("maximum"), False
        emin, emax = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        # Draft 4 uses booleans for exclusive bounds, draft 6+ uses numbers.
        if isinstance(emin, bool):
            lo_ex = emin
        elif emin is not None and (lo is None or emin >= lo):
            lo, lo_ex = emin, True
        if isinstance(emax, bool):
            hi_ex = emax
        elif emax is not None and (hi is None or emax <= hi):
            hi, hi_ex = emax, True
        return lo, lo_ex, hi, hi_ex

    def _integer(self, schema: Mapping[str, Any]) -> int:
        lo, lo_ex, hi, hi_ex = self._bounds(schema)
        ilo = -100 if lo is None else (math.floor(lo) + 1 if lo_ex else math.ceil(lo))
        ihi = ilo + 200 if hi is None else (math.ceil(hi) - 1 if hi_ex else math.floor(hi))
        if lo is None and hi is not None:
            ilo = ihi - 200
        step = schema.get("multipleOf")
        if isinstance(step, int) and not isinstance(step, bool) and step > 0:
            kmin, kmax = -(-ilo // step), ihi // step
            if kmin <= kmax:
                return self.rng.randint(kmin, kmax) * step
        return self.rng.randint(ilo, max(ilo, ihi))

    def _number(self, schema: Mapping[str, Any]) -> float | int:
        flo, lo_ex, fhi, hi_ex = self._float_bounds(schema)
        step = schema.get("multipleOf")
        if isinstance(step, (int, float)) and not isinstance(step, bool) and step > 0:
            multiple = self._multiple(step, flo, lo_ex, fhi, hi_ex)
            if multiple is not None:
                return multiple
        for _ in range(100):
            v = self.rng.uniform(flo, fhi)
            if (not lo_ex or v > flo) and (not hi_ex or v < fhi):
                return v
        return (flo + fhi) / 2

    def _float_bounds(self, schema: Mapping[str, Any]) -> tuple[float, bool, float, bool]:
        """A number's range (low, low exclusive, high, high exclusive): 200 wide where open."""
        lo, lo_ex, hi, hi_ex = self._bounds(schema)
        flo = -100.0 if lo is None else float(lo)
        fhi = flo + 200.0 if hi is None else float(hi)
        if lo is None and hi is not None:
            flo = fhi - 200.0
        return flo, lo_ex, fhi, hi_ex

    def _multiple(
        self, step: float, flo: float, lo_ex: bool, fhi: float, hi_ex: bool
    ) -> float | int | None:
        """A multiple of `step` within the range, or None when the range holds none."""
        kmin, kmax = math.ceil(flo / step), math.floor(fhi / step)
        if lo_ex and kmin * step <= flo:
            kmin += 1
        if hi_ex and kmax * step >= fhi:
            kmax -= 1
        if kmin > kmax:
            return None
        # An integer multiple of an integer step stays an int (exact multipleOf check).
        return self.rng.randint(kmin, kmax) * step


def _merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Shallow schema merge: properties and required are unioned, other keys from `b` win."""
    out = dict(a)
    for k, v in b.items():
        if k == "properties" and isinstance(out.get(k), Mapping):
            out[k] = {**out[k], **v}
        elif k == "required" and isinstance(out.get(k), list):
            out[k] = list(dict.fromkeys([*out[k], *v]))
        else:
            out[k] = v
    return out


def _json_equal(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
