"""``python -m flowctl`` runs the command line."""

import sys

from flowctl.cli import main

if __name__ == "__main__":
    sys.exit(main())
