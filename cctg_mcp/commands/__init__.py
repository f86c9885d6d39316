"""Command-line subcommands beside ``serve`` and ``check`` (``cli.py`` dispatches): ``hook``
(a Claude Code hook event becomes a notification)."""
