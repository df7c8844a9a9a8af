"""PII encryption: master keys, per-workspace keys, per-entity data keys, field ciphertexts."""
