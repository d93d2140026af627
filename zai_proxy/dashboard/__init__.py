"""Live dashboard: scrapes proxies' `/metrics`, keeps history in SQLite, serves a page over SSE.

Modules: `compute` (pure windowed math), `collector` (scrape + parse), `storage` (SQLite with an
in-memory fallback), `events` (SSE broker), `app` (HTTP routes), `settings` (what it reads),
`cli` (`zai-proxy dashboard`).
"""
