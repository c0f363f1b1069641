"""colorvid: colorize black-and-white video automatically."""

import os

__version__ = "0.1.0"

# PyTorch's OpenMP threads spin while they wait for each other. When decoding,
# encoding or any other program also needs the cores (always, in colorvid's
# pipeline), a spinning thread that loses its core stalls the others: measured
# on 2 cores with two other busy processes, the network ran at 2.6 frames/s
# spinning and 20.9 passive. It must be set before torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
