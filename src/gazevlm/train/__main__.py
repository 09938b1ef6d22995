"""`python -m gazevlm.train` (and `torchrun ... -m gazevlm.train`): see gazevlm.train.cli."""

import sys

from gazevlm.train.cli import main

if __name__ == "__main__":
    sys.exit(main())
