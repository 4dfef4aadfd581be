"""The PBX: configuration, registrar, routing, calls and features, and the daemon."""
