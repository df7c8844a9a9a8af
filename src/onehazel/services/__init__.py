"""Use cases shared by the API, the CLI and (later) the job runner."""
