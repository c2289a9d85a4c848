"""``python -m mt.train`` (what torchrun launches): the same as ``mt-train``."""

import sys

from mt.train.trainer import main

sys.exit(main())
