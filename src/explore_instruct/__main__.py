import sys

from explore_instruct.cli import main

sys.exit(main())
