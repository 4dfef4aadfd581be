"""The web console: an administrator's pages, a user portal and a REST API, served by the
daemon itself (:mod:`softswitch.http`) from ``[console]``; :mod:`.feature` is the module."""
