"""All use cases over one core; built once at start-up by ``bootstrap``."""

from __future__ import annotations

from dataclasses import dataclass, field

from onehazel.services.analytics import AnalyticsService
from onehazel.services.audit import AuditService
from onehazel.services.auth import AuthService
from onehazel.services.batch import BatchService
from onehazel.services.core import Core
from onehazel.services.entities import EntityService
from onehazel.services.events import EventService
from onehazel.services.exports import ExportService
from onehazel.services.ratelimit import RateLimitService
from onehazel.services.settings import SettingsService
from onehazel.services.states import StateService


@dataclass
class Services:
    core: Core
    auth: AuthService
    settings: SettingsService
    entities: EntityService
    events: EventService
    states: StateService
    audit: AuditService
    exports: ExportService
    rate_limits: RateLimitService
    analytics: AnalyticsService
    batch: BatchService = field(init=False)

    def __post_init__(self) -> None:
        self.batch = BatchService(self)

    @classmethod
    def over(cls, core: Core) -> Services:
        return cls(
            core=core,
            auth=AuthService(core),
            settings=SettingsService(core),
            entities=EntityService(core),
            events=EventService(core),
            states=StateService(core),
            audit=AuditService(core),
            exports=ExportService(core),
            rate_limits=RateLimitService(core),
            analytics=AnalyticsService(core),
        )

    async def close(self) -> None:
        await self.core.buckets.close()
        await self.core.store.close()
