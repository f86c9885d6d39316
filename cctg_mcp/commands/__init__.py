"""Command-line subcommands beside ``serve`` and ``check`` (``cli.py`` dispatches): ``hook``
(a Claude Code hook event becomes a notification) and ``setup`` (check the token, find the chat
id from a ``/start``, write the client configuration)."""
