"""`python -m gsa ...` runs the `gsa` command."""

import sys

from gsa.cli import main

sys.exit(main())
