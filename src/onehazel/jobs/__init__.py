"""Durable batch jobs: accept, claim, apply in chunks, resume after a crash."""
