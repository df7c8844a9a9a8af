"""Storage: tables, the unit of work and repositories. The only place SQL lives."""
