import sys

from atari_dt.cli import main

sys.exit(main())
