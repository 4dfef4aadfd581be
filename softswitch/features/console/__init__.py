"""The web console: an administrator's pages, a user portal and a REST API, served by the
daemon's web process (:mod:`softswitch.web`) from ``[console]``; :mod:`.feature` is the
daemon's side, :mod:`.web` the app the web process builds."""
