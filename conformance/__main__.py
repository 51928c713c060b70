"""``python -m optbridge_conformance ...`` is ``optbridge conform ...``.

Its own module: the runner stays below the command line (``optbridge.cli`` imports the runner's
command), so no import runs back up.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from optbridge.cli import main as cli_main

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``optbridge conform`` with ``argv`` (default: this process's arguments)."""
    return cli_main(["conform", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
