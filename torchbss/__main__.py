"""``python -m torchbss`` is the ``torchbss`` command."""

import sys

from torchbss.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
