"""LLM providers behind one contract: the run loop sends a ModelRequest, gets a ModelReply.

Modules: `base` (the contract), `errors` (ProviderError tree), `openai`, `anthropic` (real APIs
through the official SDKs), `scripted` (replays a script), `random` (seeded random policy).
`make_provider("openai:gpt-4.1")` builds one from a spec string. The SDK-backed classes are
imported lazily so that offline use does not pay for importing the SDKs.

This package exports what a user of providers needs, or a writer of one (the contract, the
error tree); helpers such as `base.reply_violation` are imported from their modules.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.providers.base import (
    Message,
    ModelReply,
    ModelRequest,
    Provider,
    ToolCall,
    ToolSpec,
    Usage,
)
from engine.providers.errors import (
    ErrorKind,
    MalformedReply,
    ProviderAPIError,
    ProviderConfigError,
    ProviderError,
    ScriptError,
)

if TYPE_CHECKING:
    from engine.providers.anthropic import AnthropicProvider
    from engine.providers.openai import OpenAIProvider
    from engine.providers.random import RandomProvider
    from engine.providers.scripted import ScriptedProvider

__all__ = [
    "AnthropicProvider",
    "ErrorKind",
    "MalformedReply",
    "Message",
    "ModelReply",
    "ModelRequest",
    "OpenAIProvider",
    "Provider",
    "ProviderAPIError",
    "ProviderConfigError",
    "ProviderError",
    "RandomProvider",
    "ScriptError",
    "ScriptedProvider",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "make_provider",
]

PROVIDER_KINDS = ("openai", "anthropic", "scripted", "random")

_LAZY = {
    "OpenAIProvider": "engine.providers.openai",
    "AnthropicProvider": "engine.providers.anthropic",
    "ScriptedProvider": "engine.providers.scripted",
    "RandomProvider": "engine.providers.random",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_provider(
    spec: str,
    *,
    base_url: str | None = None,
    script_path: str | Path | None = None,
    seed: int | None = None,
    **options: Any,
) -> Provider:
    """Build a provider from a spec string.

    - `openai:MODEL` — OpenAIProvider (`base_url` for OpenAI-compatible servers; `seed` is
      sent as the API's `seed`); options: gating, max_retries, timeout, max_tokens,
      max_tokens_field, request_options, api_key_env, http_client.
    - `anthropic:MODEL` — AnthropicProvider; options: max_tokens, thinking, send_all_tools,
      max_validation_retries, max_retries, timeout, request_options, http_client.
    - `scripted:PATH` or `scripted` with `script_path=` — ScriptedProvider.from_file.
    - `random`, `random:SEED` or `random` with `seed=` — RandomProvider; option text_probability.

    Raises ProviderConfigError for an unknown provider, a missing model/path, or an option the
    provider does not take.
    """
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in PROVIDER_KINDS:
        raise ProviderConfigError(
            f"unknown provider {spec!r}; expected one of: openai:MODEL, anthropic:MODEL, "
            "scripted[:PATH], random[:SEED]",
            provider=spec,
        )
    given = {"base_url": base_url, "script_path": script_path, "seed": seed}
    for what in _NOT_TAKEN[kind]:
        if given[what] is not None:
            raise ProviderConfigError(
                f"{what} does not apply to the {kind} provider", provider=spec
            )
    return _MAKERS[kind](spec, arg, given, options)


# What each kind of provider does not take, of make_provider's own keywords.
_NOT_TAKEN = {
    "openai": ("script_path",),
    "anthropic": ("script_path", "seed"),
    "scripted": ("base_url", "seed"),
    "random": ("base_url", "script_path"),
}


def _model(spec: str, arg: str) -> str:
    if not arg:
        kind = spec.partition(":")[0].strip().lower()
        raise ProviderConfigError(f"{kind} needs a model name: '{kind}:MODEL'", provider=spec)
    return arg


def _openai(spec: str, arg: str, given: dict[str, Any], options: dict[str, Any]) -> Provider:
    from engine.providers.openai import OpenAIProvider

    model = _model(spec, arg)
    if given["seed"] is not None:
        options["request_options"] = {**options.get("request_options", {}), "seed": given["seed"]}
    return _build(OpenAIProvider, spec, model, base_url=given["base_url"], **options)


def _anthropic(spec: str, arg: str, given: dict[str, Any], options: dict[str, Any]) -> Provider:
    from engine.providers.anthropic import AnthropicProvider

    return _build(AnthropicProvider, spec, _model(spec, arg), base_url=given["base_url"], **options)


def _scripted(spec: str, arg: str, given: dict[str, Any], options: dict[str, Any]) -> Provider:
    script_path = given["script_path"]
    if arg and script_path is not None and Path(arg) != Path(script_path):
        raise ProviderConfigError(
            f"two script paths given: {arg!r} in the spec and {str(script_path)!r}",
            provider=spec,
        )
    path = arg or script_path
    if not path:
        raise ProviderConfigError(
            "the scripted provider needs a script: 'scripted:PATH' or script_path=", provider=spec
        )
    if options:
        raise ProviderConfigError(
            f"unknown options for the scripted provider: {sorted(options)}", provider=spec
        )
    from engine.providers.scripted import ScriptedProvider

    return ScriptedProvider.from_file(path)


def _random(spec: str, arg: str, given: dict[str, Any], options: dict[str, Any]) -> Provider:
    from engine.providers.random import RandomProvider

    seed: int | None = given["seed"]
    if arg:
        try:
            spec_seed = int(arg)
        except ValueError:
            raise ProviderConfigError(
                f"random seed must be an integer, got {arg!r}", provider=spec
            ) from None
        if seed is not None and spec_seed != seed:
            raise ProviderConfigError(
                f"two seeds given: {spec_seed} in the spec and {seed}", provider=spec
            )
        seed = spec_seed
    return _build(RandomProvider, spec, seed, **options)


_MAKERS = {"openai": _openai, "anthropic": _anthropic, "scripted": _scripted, "random": _random}


def _build(cls: Any, spec: str, *args: Any, **kwargs: Any) -> Provider:
    # Check options against the constructor first, so a typo is reported as such instead of
    # surfacing as a TypeError from deep inside.
    try:
        inspect.signature(cls).bind(*args, **kwargs)
    except TypeError as exc:
        accepted = [
            p.name
            for p in inspect.signature(cls).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        ]
        raise ProviderConfigError(
            f"bad options for {spec!r}: {exc}; accepted options: {accepted}", provider=spec
        ) from None
    provider: Provider = cls(*args, **kwargs)
    return provider
