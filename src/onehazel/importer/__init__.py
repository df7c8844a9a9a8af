"""``onehazel import``: load entities, events or states from NDJSON or CSV files, exactly once.

Built on :mod:`onehazel.client` only (no server code). What it guarantees:

- **Constant memory**: the file is streamed (one pass to hash and count it, one to send it);
  at most a few batches are held at once, whatever the file's size.
- **Exactly once**: an event without an ``eventId`` gets ``imp_`` + the first 32 hex digits of
  SHA-256(the file's SHA-256, its line number, the line's bytes), so importing the same file
  again (from any path or machine) sends the same ids and the server stores nothing twice. Each
  batch carries an ``Idempotency-Key`` derived from the file's SHA-256 and its first and last
  line, so a re-sent batch returns the job it already made.
- **Resumable**: after each job completes, the last confirmed line is written atomically to a
  progress file; ``--resume`` starts after it. A crash or Ctrl-C loses nothing: batches sent
  but not confirmed are sent again by the next run and deduplicated.
- **No silent rejection**: every item the server rejects, and every line that could not be read
  (bad JSON, bad CSV row), is reported with its line number, externalId and error code and
  message (never the item itself, which may hold PII), and makes the exit code 1.

Modules: ``reading`` (file identity, NDJSON records), ``csv_rows`` (CSV header and cell
mapping), ``numbers`` (exact numbers), ``batches`` (batches and derived ids), ``progress`` (the
progress file), ``runner`` (sending and confirming), ``display`` and ``command`` (the CLI).
"""

from onehazel.importer.command import ImportRequest, import_file

__all__ = ["ImportRequest", "import_file"]
