"""Suite-wide settings.

Hypothesis explores new random examples on every local run (that is how the property tests
find bugs), but CI must be deterministic: with CI set, the `ci` profile derandomizes the
search, so a given commit always runs the same examples. Any profile can still be chosen with
`--hypothesis-profile`.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
