"""``python -m wan_egoexo``: see cli/main.py."""

import sys

from .cli.main import main

sys.exit(main())
