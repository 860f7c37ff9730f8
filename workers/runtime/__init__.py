"""The worker process's setup: BLAS threads, the allocator, and the clock that says where time goes."""
