import sys

from explore_instruct.cli import main
from explore_instruct.lifeline import watch_parent

watch_parent()
sys.exit(main())
