"""``python -m iclscope`` = the ``iclscope`` command."""

import sys

from iclscope.cli import main

sys.exit(main())
