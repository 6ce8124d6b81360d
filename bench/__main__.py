"""``python -m bench``: the archiver benchmark (see bench/archiver.py)."""

from bench.archiver import main

raise SystemExit(main())
