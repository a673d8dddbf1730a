"""Each example's "Run it against a real model" block works after README's light install.

README's first command installs the core only; the model providers are extras. A new user who
follows an example's real-model block must be told to install the extra that block needs: the
one the CLI itself names when the provider's SDK is missing.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import pytest
from _example_cli import REPO

EXAMPLES = sorted(p.name for p in (REPO / "examples").iterdir() if (p / "README.md").is_file())
INSTALL = re.compile(r"^\.venv/bin/pip install (?:-q )?-e '\.\[([a-z,]+)\]'", re.M)
# The SDK each provider imports, to hide it from the CLI as a light install would.
SDKS = {"openai": "openai", "anthropic": "anthropic"}


def _real_model_block(example: str) -> str:
    readme = (REPO / "examples" / example / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("\n## Run it against a real model\n") :]
    block = re.search(r"^```bash\n(.*?)^```", section, re.S | re.M)
    assert block, f"examples/{example}/README.md: no bash block under 'Run it against a real model'"
    return block.group(1)


def _extra_the_cli_names(example: str, provider: str) -> str:
    """What `toolfsm run` says when the provider's SDK is not installed."""
    code = (
        f"import sys; sys.modules[{SDKS[provider]!r}] = None; "
        "from engine.cli import main; sys.argv[0] = 'toolfsm'; main()"
    )
    words = ["run", f"examples/{example}/agent.yaml", "--model", f"{provider}:some-model"]
    proc = subprocess.run(
        [sys.executable, "-c", code, *words],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", f"{provider.upper()}_API_KEY": "sk-test"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    named = re.fullmatch(r"toolfsm: error: .* needs: pip install 'toolfsm\[(\w+)\]'\n", proc.stderr)
    assert named, proc.stderr
    return named.group(1)


@pytest.mark.parametrize("example", EXAMPLES)
def test_real_model_block_installs_the_extras_it_uses(example: str) -> None:
    block = _real_model_block(example)
    used = sorted(set(re.findall(r"--model (openai|anthropic):", block)))
    assert used, f"examples/{example}/README.md: the real-model block runs no provider"
    install = INSTALL.search(block)
    assert install, f"examples/{example}/README.md: the real-model block installs no extra"
    installed = set(install.group(1).split(","))
    declared = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    assert installed <= set(declared), f"not extras of the package: {installed - set(declared)}"
    for provider in used:
        assert _extra_the_cli_names(example, provider) in installed, (example, provider)
