import sys

from gsa.eval.cli import main

sys.exit(main())
