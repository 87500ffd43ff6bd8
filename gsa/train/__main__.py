"""`python -m gsa.train`: run by the `gsa` command's module, which loads what the trainer's registry needs."""

import sys

from gsa.cli import train_main

sys.exit(train_main())
