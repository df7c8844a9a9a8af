"""HTTP only: routes, auth dependency, wire schemas, error rendering."""
