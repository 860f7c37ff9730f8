"""Keep freed memory in the process for reuse, instead of glibc handing it back and faulting it in again."""
import ctypes

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
# Free memory at the top of the heap kept up to this much: the hot path's few MiB, not what
# a burst of large frames left (1 GiB kept 150 MB of garbage frames for the rest of a run).
TRIM_THRESHOLD = 64 << 20
# Blocks below this come from the heap; larger ones (a big evaluation batch, a garbage frame)
# are mapped and handed back the moment they are freed. Above every hot-path buffer at width
# 1024 and batch 128 (3.2 MiB).
MMAP_THRESHOLD = 8 << 20


def keep_freed_memory() -> bool:
    """Fixed malloc thresholds; False where the C library is not glibc (nothing to tune).

    A worker allocates and frees the same few sizes every batch (activations, gradients, the
    optimizers' temporaries, ZeroMQ's receive buffers, in several threads). With glibc's
    adaptive thresholds, workers kept returning that memory to the kernel: at width 256 about
    500 page faults and 1.3 ms of system time per batch and stage, as much as the stage's own
    arithmetic, and a 3-stage run cost 8 ms of CPU per batch against 4 ms for the same maths in
    one process. With the thresholds fixed: 4 page faults per batch, 5.5 ms.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
