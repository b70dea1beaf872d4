"""``python -m fedseg`` runs the command-line interface."""

import sys

from fedseg.cli import main

sys.exit(main())
