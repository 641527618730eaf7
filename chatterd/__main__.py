import sys

from chatterd.cli import main

sys.exit(main())
