"""The network lab: namespaces as hosts, delaying relays, shaping, the job run across them, the projection."""
