"""`dni top RUN_DIR`: a running job's live view, from what its coordinator writes in the run directory."""
