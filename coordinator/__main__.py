"""`python -m coordinator` is the `dni` command."""
from coordinator.entry import main

raise SystemExit(main())
