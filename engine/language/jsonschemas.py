"""Untrusted JSON Schemas (a tool's `parameters` in a rule file), checked before anything uses them.

A rule file may come from anywhere, and jsonschema trusts the schemas it is given: a
malformed one crashes it (`{type: 3.5}`), a `$ref` to a URL makes it fetch the URL, and
`{$ref: '#'}` recurses without end. `schema_problem` finds all of these statically:

1. `$schema`, when given, names a dialect jsonschema knows;
2. the schema is valid against that dialect's metaschema;
3. every reference (`$ref`, `$dynamicRef`, `$recursiveRef`) is local (`#...`) and resolves
   inside the schema: nothing is ever retrieved;
4. no chain of references and in-place applicators (`allOf`, `anyOf`, `oneOf`, `not`,
   `if`/`then`/`else`, `dependentSchemas`) leads from a subschema back to itself, the one way
   a finite schema makes validation recurse forever.

A schema without a problem may then be used with `validator`, whose registry refuses to
retrieve anything (belt and braces: it is never asked to).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jsonschema
import jsonschema.protocols
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable
from referencing.jsonschema import specification_with

Path = tuple[Any, ...]

# Keywords whose value is one subschema, a list of them, or a mapping of names to them.
_ONE: tuple[str, ...] = (
    *("additionalProperties", "additionalItems", "contains", "propertyNames", "not", "if"),
    *("then", "else", "unevaluatedItems", "unevaluatedProperties", "contentSchema", "items"),
)
_LIST = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
_MAP: tuple[str, ...] = (
    *("properties", "patternProperties", "$defs", "definitions", "dependentSchemas"),
    "dependencies",
)
_REFS = ("$ref", "$dynamicRef", "$recursiveRef")
# Applicators that apply their subschemas to the same instance (no descent into it).
_IN_PLACE_ONE = ("not", "if", "then", "else")
_IN_PLACE_LIST = ("allOf", "anyOf", "oneOf")
_IN_PLACE_MAP = ("dependentSchemas", "dependencies")


@dataclass(frozen=True, slots=True)
class SchemaProblem:
    """Why a schema is not usable, and where inside it (a path from the schema's root)."""

    message: str
    at: Path


def _refuse_retrieval(uri: str) -> Resource[Any]:
    # Validating an untrusted rule file must never make a network request.
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]  # (attrs field, not in the stubs)


def _subschemas(schema: dict[str, Any], path: Path) -> Iterator[tuple[Any, Path, bool]]:
    """(subschema, its path, applied to the same instance) for each direct subschema."""
    for key in _ONE:
        if key in schema and isinstance(schema[key], dict | bool):
            yield schema[key], (*path, key), key in _IN_PLACE_ONE
    for key in _LIST:
        if isinstance(schema.get(key), list):
            for i, item in enumerate(schema[key]):
                yield item, (*path, key, i), key in _IN_PLACE_LIST
    for key in _MAP:
        if isinstance(schema.get(key), dict):
            for name, item in schema[key].items():
                if isinstance(item, dict | bool):
                    yield item, (*path, key, name), key in _IN_PLACE_MAP


def _object_subschemas(
    schema: dict[str, Any], path: Path
) -> Iterator[tuple[dict[str, Any], Path, bool]]:
    """`_subschemas` that are objects (a boolean schema has nothing to walk)."""
    for sub, sub_path, in_place in _subschemas(schema, path):
        if isinstance(sub, dict):
            yield sub, sub_path, in_place


@dataclass
class _Walk:
    """The path of every subschema (by identity), and the same-instance edges between them."""

    path_of: dict[int, Path]
    edges: dict[int, list[tuple[int, Path]]]  # subschema -> (same-instance target, via path)


def _resolve(key: str, ref: Any, where: Path, resolver: Any) -> SchemaProblem | Any:
    """What reference `ref` (under `key`) points to: a resolved object schema, None for a
    boolean schema, or the problem with the reference."""
    if not isinstance(ref, str):
        return SchemaProblem(f"{key} must be a string", where)
    if not ref.startswith("#"):
        return SchemaProblem(
            f"{key} {ref!r} refers outside the schema; only references inside it "
            "('#...') are allowed (nothing is fetched)",
            where,
        )
    try:
        resolved = resolver.lookup(ref)
    except (Unresolvable, ValueError, LookupError, TypeError):
        return SchemaProblem(f"{key} {ref!r} points to nothing in this schema", where)
    if isinstance(resolved.contents, dict):
        return resolved
    if isinstance(resolved.contents, bool):
        return None
    return SchemaProblem(f"{key} {ref!r} points to something that is not a schema", where)


def _target_problem(
    cls: type[jsonschema.protocols.Validator], target: dict[str, Any], where: Path
) -> SchemaProblem | None:
    """A reference's target checked against the metaschema (it may be no subschema of its
    own, say under `const`)."""
    try:
        cls.check_schema(target)
    except jsonschema.SchemaError as exc:
        return SchemaProblem(f"the schema it refers to is not valid: {exc.message}", where)
    return None


def _follow_refs(
    node: dict[str, Any],
    path: Path,
    resolver: Any,
    edges: list[tuple[int, Path]],
    referenced: list[tuple[dict[str, Any], Path, Any]],
) -> SchemaProblem | None:
    """Each reference of `node` becomes an edge to its target, and the target is queued."""
    for key in _REFS:
        if key not in node:
            continue
        where = (*path, key)
        resolved = _resolve(key, node[key], where, resolver)
        if isinstance(resolved, SchemaProblem):
            return resolved
        if resolved is not None:  # None: a boolean schema, nothing to walk
            edges.append((id(resolved.contents), where))
            referenced.append((resolved.contents, where, resolved.resolver))
    return None


def _walk(
    schema: dict[str, Any], cls: type[jsonschema.protocols.Validator]
) -> SchemaProblem | _Walk:
    """Every subschema, structural ones first; a reference's target that is not one (a `$ref`
    into `const` or an unknown keyword) is checked against the metaschema before it is walked."""
    specification = specification_with(cls.META_SCHEMA.get("$schema", ""))
    root = specification.create_resource(schema)
    registry: Registry[Any] = Registry(retrieve=_refuse_retrieval)  # type: ignore[call-arg]
    registry = registry.with_resource(root.id() or "", root).crawl()
    walk = _Walk({}, {})
    pending: list[tuple[dict[str, Any], Path, Any]] = [
        (schema, (), registry.resolver(root.id() or ""))
    ]
    referenced: list[tuple[dict[str, Any], Path, Any]] = []
    while pending or referenced:
        if not pending:
            target, where, resolver = referenced.pop()
            if id(target) in walk.path_of:
                continue
            problem = _target_problem(cls, target, where)
            if problem is not None:
                return problem
            pending.append((target, where, resolver))
        node, path, resolver = pending.pop()
        if id(node) in walk.path_of:
            continue
        walk.path_of[id(node)] = path
        resolver = resolver.in_subresource(specification.create_resource(node))
        edges = walk.edges.setdefault(id(node), [])
        problem = _follow_refs(node, path, resolver, edges, referenced)
        if problem is not None:
            return problem
        for sub, sub_path, in_place in _object_subschemas(node, path):
            if in_place:  # applied to the same instance: an edge too
                edges.append((id(sub), sub_path))
            pending.append((sub, sub_path, resolver))
    return walk


def _loop(walk: _Walk) -> SchemaProblem | None:
    """A cycle of same-instance edges (validation would recurse forever), at the edge closing it."""
    state: dict[int, int] = {}  # 1 = on the current path, 2 = done
    for start in walk.edges:
        if start in state:
            continue
        stack: list[tuple[int, Iterator[tuple[int, Path]]]] = [(start, iter(walk.edges[start]))]
        state[start] = 1
        while stack:
            node, successors = stack[-1]
            step = next(successors, None)
            if step is None:
                state[node] = 2
                stack.pop()
                continue
            target, via = step
            if state.get(target) == 1:
                return SchemaProblem(
                    "the schema refers to itself in a loop (validating would never end)", via
                )
            if target not in state:
                state[target] = 1
                stack.append((target, iter(walk.edges.get(target, ()))))
    return None


def _dialect(schema: dict[str, Any]) -> SchemaProblem | type[jsonschema.protocols.Validator]:
    if "$schema" not in schema:
        return jsonschema.validators.validator_for(schema)
    uri = schema["$schema"]
    if not isinstance(uri, str):
        return SchemaProblem("$schema must be a string (a JSON Schema dialect URI)", ("$schema",))
    known: Any = jsonschema.validators.validator_for(schema, default=None)  # type: ignore[arg-type]
    if known is None:
        return SchemaProblem(f"unknown JSON Schema dialect $schema {uri!r}", ("$schema",))
    cls: type[jsonschema.protocols.Validator] = known
    return cls


def schema_problem(schema: dict[str, Any]) -> SchemaProblem | None:
    """Why `schema` cannot be used safely (see the module docstring), None when it can."""
    cls = _dialect(schema)
    if isinstance(cls, SchemaProblem):
        return cls
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return SchemaProblem(exc.message, tuple(exc.absolute_path))
    walked = _walk(schema, cls)
    if isinstance(walked, SchemaProblem):
        return walked
    return _loop(walked)


# Checking a schema costs milliseconds, and the same parameter schemas recur across tools and
# files: results are memoised by content (pure results; JSON-shaped schemas only, so equal text
# means an equal schema).
_PROBLEMS: dict[str, SchemaProblem | None] = {}


def _json_shaped(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_shaped(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_json_shaped(v) for v in value)
    return True


def cached_schema_problem(schema: dict[str, Any]) -> SchemaProblem | None:
    """`schema_problem`, memoised."""
    key = json.dumps(schema, sort_keys=True) if _json_shaped(schema) else None
    if key is not None and key in _PROBLEMS:
        return _PROBLEMS[key]
    problem = schema_problem(schema)
    if key is not None and len(_PROBLEMS) < 4096:
        _PROBLEMS[key] = problem
    return problem


def validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    """A validator for a schema `schema_problem` accepted; it never retrieves anything."""
    cls = jsonschema.validators.validator_for(schema)
    registry: Registry[Any] = Registry(retrieve=_refuse_retrieval)  # type: ignore[call-arg]
    return cls(schema, registry=registry)


__all__ = ["SchemaProblem", "cached_schema_problem", "schema_problem", "validator"]
