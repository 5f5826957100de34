import sys

from zett.cli import main

sys.exit(main())
