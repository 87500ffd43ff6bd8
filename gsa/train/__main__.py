import sys

from gsa.train.loop import main

sys.exit(main())
