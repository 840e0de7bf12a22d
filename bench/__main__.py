"""`python -m bench [--runs N]`: see bench/run.py."""

from bench.run import main

raise SystemExit(main())
