"""``python -m marrowscope`` (and ``torchrun -m marrowscope``) runs the command-line interface."""

import sys

from marrowscope.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
