"""``python -m mt.train`` (what torchrun launches): the same as ``mt-train``."""

import sys

from mt.train.cli import train_main

sys.exit(train_main())
