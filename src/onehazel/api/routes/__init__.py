"""Route modules, one per resource; each function parses, calls one service, returns."""
