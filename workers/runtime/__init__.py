"""The worker process's setup: BLAS threads, the allocator, the clock that says where time goes, its peak memory."""
