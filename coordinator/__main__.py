"""`python -m coordinator` is the `dni` command."""
import workers.runtime.blas  # noqa: F401  (pins BLAS threads before numpy loads)
from coordinator.cli import main

raise SystemExit(main())
