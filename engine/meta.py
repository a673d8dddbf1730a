"""toolfsm's own version, for `toolfsm --version` and SARIF's `tool.driver.version`."""

from __future__ import annotations


def version() -> str:
    """The installed distribution's version.

    Read from `engine/_version.py`, which the build writes (pyproject's version hook), and
    else from the package metadata: importing importlib.metadata alone costs more than the
    rest of `toolfsm --version`.
    """
    from importlib import import_module

    try:
        generated = import_module("engine._version")
    except ImportError:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as distribution_version

        try:
            return distribution_version("toolfsm")
        except PackageNotFoundError:  # a source tree on sys.path, never installed
            return "0+unknown"
    return str(generated.__version__)
