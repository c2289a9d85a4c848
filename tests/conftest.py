"""Session set-up shared by every test: one OpenMP thread unless the caller chose otherwise.

The commands pick their thread count from the machine's load when neither ``--threads`` nor
``OMP_NUM_THREADS`` chose one (``mt.common.threads``); tests call the commands in process and as
subprocesses, so without a choice their threads (and their stderr, which says the choice) would depend on
what else runs on the machine. Set here, before anything imports torch, it also reaches every subprocess.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
