"""``python -m qsx_batch``: the ``qsx-batch`` command line."""

import sys

from .cli import main

sys.exit(main())
