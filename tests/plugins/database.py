"""Database fixtures: SQLite and PostgreSQL stores (filled in by the foundation work)."""
