"""Transports: the one place where foreign errors (httpx, OS, Telegram envelopes) become ours."""
