"""Resilience primitives: errors, clock, breaker, retry, pipeline, health, recovery, metrics, chaos.

Nothing here imports Telegram, httpx or MCP code: it wraps any async callable.
"""
