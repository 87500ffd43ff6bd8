import sys

from gsa.train.cli import main

sys.exit(main())
