"""``python -m wan_egoexo``: see cli.py."""

import sys

from .cli import main

sys.exit(main())
