import sys

from chatter_inject.cli import main

sys.exit(main())
