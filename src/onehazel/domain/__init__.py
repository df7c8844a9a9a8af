"""Pure domain rules: templates, validation, values and errors. No I/O lives here."""
