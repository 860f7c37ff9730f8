"""One event loop per worker role (layer, head, time box, parameter service) and `dni worker`; they stamp times."""
