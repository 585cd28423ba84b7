"""The ``freight`` command line: thin commands over the client library and the server."""
