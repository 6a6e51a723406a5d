"""``python -m marrowscope`` runs the command line, like the ``marrowscope`` script."""

import sys

from marrowscope.cli.main import main

sys.exit(main())
