"""HTTP off the daemon's loop: the web process (:mod:`.child`) serves what features name
through the daemon's :class:`~.host.WebHost`, each listener bounded by :mod:`.server`."""
