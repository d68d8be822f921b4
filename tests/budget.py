"""How many examples a hypothesis property runs: a quick count for ``make test``, the full one
on demand.

Properties declare the count they were written with (``examples(400)``). By default a count
above hypothesis' own default of 100 runs 100 examples: every run on CI draws fresh random
examples, so coverage accumulates across runs while one run stays quick. With
``GAFFER_TEST_THOROUGH=1`` every property runs its full declared count (before a release, or
after touching a pure core that properties guard).
"""

from __future__ import annotations

import os
from typing import Mapping

QUICK = 100
"""Examples per property in the quick default (hypothesis' own default count)."""


def examples(declared: int, environ: Mapping[str, str] = os.environ) -> int:
    """The number of examples to run for a property declared with ``declared``."""
    thorough = environ.get("GAFFER_TEST_THOROUGH", "") not in ("", "0")
    return declared if thorough else min(declared, QUICK)
