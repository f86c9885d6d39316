"""cctg-mcp: notify a person on Telegram from an MCP client, and keep working when things fail."""

__version__ = "0.1.0"
