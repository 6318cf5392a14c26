import sys

from scratchdet.cli import main

sys.exit(main())
