"""`python -m workers` is `dni worker`: how a local run starts its workers (with -P, off the working directory)."""
from workers.cli import main

raise SystemExit(main())
