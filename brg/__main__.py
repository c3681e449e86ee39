"""Run the ``brgnnft`` command as ``python -m brgnnft.brg``."""

import sys

from brgnnft.brg.cli import main

sys.exit(main())
