"""Pin BLAS to one thread per process; must be imported before numpy is."""
import os
import sys

# Two processes x two OpenBLAS threads on two cores ran 11-24x slower than 2 x 1 here:
# every worker shares the machine, so one thread each unless the user asks otherwise.
if "numpy" in sys.modules:  # too late to take effect: say so rather than silently oversubscribe
    print("warning: numpy imported before workers.runtime.blas; BLAS threads not pinned", file=sys.stderr)
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, os.environ.get("DNI_BLAS_THREADS", "1"))
