"""python -m q4gsw: the command line."""

import sys

from .cli import main

sys.exit(main())
