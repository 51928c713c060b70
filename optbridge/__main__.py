"""``python -m optbridge``: the command line (see :mod:`optbridge.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
