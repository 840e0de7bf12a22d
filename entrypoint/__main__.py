import sys

from entrypoint.commands.cli import main

sys.exit(main(sys.argv[1:]))
