"""OneHazel data ingestion server: entities, events and states for iGaming operators."""

__version__ = "0.1.0"
