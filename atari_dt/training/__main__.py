"""``torchrun --nproc_per_node N -m atari_dt.training CONFIG [...]``: the arguments of
``atari-dt train``, one process per rank."""

import sys

from atari_dt.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
