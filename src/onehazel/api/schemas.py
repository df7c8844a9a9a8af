"""Wire schemas for the OpenAPI document.

Bodies are parsed by ``api/body.py`` and validated by ``domain/validation.py``
(so money stays exact and errors follow the contract); these pydantic models
describe the same shapes for ``/openapi.json`` and ``/docs``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Timestamp = str
ExternalId = Field(min_length=1, max_length=256, description="1-256 characters, no control characters")


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(_Wire):
    path: str = Field(description="Where the problem is, e.g. data.amount")
    code: str = Field(description="e.g. invalid_field_type, unknown_event_type, missing_field")
    message: str


class ErrorInfo(_Wire):
    code: str = Field(description="The contract's error code, e.g. validation_error")
    message: str
    details: list[ErrorDetail] | None = None
    requestId: str


class ErrorBody(_Wire):
    error: ErrorInfo


class WarningInfo(_Wire):
    code: Literal["missing_required_field"]
    field: str
    message: str


class FieldSpecOut(_Wire):
    type: Literal["string", "number", "decimal", "integer", "boolean", "timestamp", "object", "array", "any"]
    pii: bool
    enum: list[str] | None = None
    description: str | None = None


class EntityTypeOut(_Wire):
    fields: dict[str, FieldSpecOut]


class EventTypeOut(_Wire):
    description: str
    requiredFields: list[str]
    fields: dict[str, FieldSpecOut]


class StateKeyOut(_Wire):
    description: str
    value: FieldSpecOut


class TemplateOut(_Wire):
    id: str
    name: str
    version: int
    description: str
    entityTypes: dict[str, EntityTypeOut]
    eventTypes: dict[str, EventTypeOut]
    stateKeys: dict[str, StateKeyOut]


class TemplateList(_Wire):
    data: list[TemplateOut]


class RetentionIn(_Wire):
    eventsDays: int | None = Field(default=None, ge=1, le=36_500, description="null keeps events forever")
    deletedEntitiesDays: int | None = Field(default=None, ge=0, le=3_650)


class SettingsIn(_Wire):
    templateId: str | None = Field(default=None, description="tpl_igaming, or null")
    retention: RetentionIn | None = None
    updatedAt: Timestamp | None = Field(default=None, description="Ignored (read-only)")


class RetentionOut(_Wire):
    eventsDays: int | None
    deletedEntitiesDays: int


class SettingsOut(_Wire):
    templateId: str | None
    retention: RetentionOut
    updatedAt: Timestamp | None


class EntityIn(_Wire):
    externalId: str = ExternalId
    type: str = Field(description="An entity type of the template: player, operator or game")
    attributes: dict[str, Any] = Field(
        default_factory=dict,
        description="Merged into the stored attributes; a key set to null removes it. "
        "Decimal fields accept numbers or strings and are returned as strings.",
    )


class EntityOut(_Wire):
    externalId: str
    type: str
    attributes: dict[str, Any]
    createdAt: Timestamp
    updatedAt: Timestamp
    version: int
    warnings: list[WarningInfo] | None = None


class EntityPage(_Wire):
    data: list[EntityOut] = Field(description='PII values appear as {"$encrypted": "<ciphertext>"}')
    nextCursor: str | None


class DeletedOut(_Wire):
    externalId: str
    deletedAt: Timestamp
    purgeAfter: Timestamp


class EventIn(_Wire):
    type: str = Field(description="An event type of the template, e.g. transaction")
    data: dict[str, Any] = Field(default_factory=dict)
    eventId: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Idempotency key, unique per workspace; assigned (evt_...) when absent",
    )
    timestamp: Timestamp | None = Field(default=None, description="RFC 3339 with offset; default receivedAt")
    externalId: str | None = Field(default=None, description="Optional; must equal the path's externalId")


class EventOut(_Wire):
    eventId: str
    type: str
    externalId: str
    data: dict[str, Any]
    timestamp: Timestamp = Field(description="As sent by the client, or receivedAt")
    receivedAt: Timestamp
    warnings: list[WarningInfo] | None = None
    duplicate: bool | None = Field(default=None, description="true when this was an exact replay")


class EventPage(_Wire):
    data: list[EventOut]
    nextCursor: str | None


class StateIn(_Wire):
    value: Any = Field(description="Checked against the template's state key (balance is a decimal)")
    timestamp: Timestamp | None = Field(default=None, description="RFC 3339 with offset; default now")
    externalId: str | None = Field(default=None, description="Optional; must equal the path's externalId")
    key: str | None = Field(default=None, description="Optional; must equal the path's key")


class StateValue(_Wire):
    value: Any
    timestamp: Timestamp
    updatedAt: Timestamp


class StateOut(StateValue):
    key: str


class StatePut(StateOut):
    applied: bool = Field(description="false when a newer state was already stored (returned instead)")


class StateList(_Wire):
    externalId: str
    states: dict[str, StateValue]


class EventCount(_Wire):
    type: str | None = Field(default=None, description="Present when grouped by type")
    day: str | None = Field(default=None, description="UTC date YYYY-MM-DD; present when grouped by day")
    count: int


class EventCounts(_Wire):
    data: list[EventCount]
    from_: Timestamp = Field(alias="from", description="Start of the range (inclusive)")
    to: Timestamp = Field(description="End of the range (exclusive)")


class TransactionSum(_Wire):
    currency: str | None = Field(default=None, description="Present when grouped by currency")
    type: str | None = Field(default=None, description="Transaction type (deposit, ...) if grouped by it")
    count: int
    sum: str = Field(description='Exact decimal sum of amount, e.g. "0.3"; scale as the largest amount\'s')


class TransactionSums(_Wire):
    data: list[TransactionSum]
    from_: Timestamp = Field(alias="from", description="Start of the range (inclusive)")
    to: Timestamp = Field(description="End of the range (exclusive)")


class EntityCount(BaseModel):
    model_config = ConfigDict(extra="allow")
    count: int = Field(description='Plus the group key: "type", or the attribute named by groupBy (any JSON)')


class EntityCounts(_Wire):
    data: list[EntityCount]


class Health(_Wire):
    status: Literal["ok", "unavailable"]


BODY_MODELS: list[type[BaseModel]] = [SettingsIn, EntityIn, EventIn, StateIn]


class EventItemIn(EventIn):
    externalId: str = ExternalId


class StateItemIn(StateIn):
    externalId: str = ExternalId
    key: str


class EntityBatchIn(_Wire):
    entities: list[EntityIn] = Field(max_length=1000)


class EventBatchIn(_Wire):
    events: list[EventItemIn] = Field(max_length=5000)


class StateBatchIn(_Wire):
    states: list[StateItemIn] = Field(max_length=1000)


class BatchAccepted(_Wire):
    jobId: str
    status: Literal["queued", "processing", "completed", "failed"] = Field(
        description="queued for a new job; a replay (same Idempotency-Key and body) gives the job's"
        " current status"
    )
    total: int


class ItemError(_Wire):
    code: str
    message: str
    path: str


class ItemOutcome(_Wire):
    model_config = ConfigDict(extra="allow")
    index: int
    status: Literal["succeeded", "failed", "duplicate"]
    externalId: str | None
    eventId: str | None = None
    error: ItemError | None = None
    warnings: list[WarningInfo] | None = None


class DryRunResults(_Wire):
    results: list[ItemOutcome]


class JobError(_Wire):
    index: int | None
    code: str
    message: str


class JobWarning(_Wire):
    index: int
    code: str
    field: str
    message: str


class JobOut(_Wire):
    jobId: str
    kind: Literal["entities", "events", "states"]
    status: Literal["queued", "processing", "completed", "failed"]
    total: int
    processed: int
    succeeded: int
    failed: int
    duplicates: int
    errors: list[JobError] = Field(description="The first 100 item errors")
    warnings: list[JobWarning] = Field(description="The first 100 item warnings")
    createdAt: Timestamp
    startedAt: Timestamp | None
    completedAt: Timestamp | None


class JobItemPage(_Wire):
    data: list[ItemOutcome]
    nextCursor: str | None


BODY_MODELS += [EntityBatchIn, EventBatchIn, StateBatchIn]


class AuditEntryOut(_Wire):
    id: str
    at: Timestamp = Field(description="When the action happened")
    actor: str = Field(description="The API key id (key_...) that acted, 'cli' or 'system'")
    action: str = Field(
        description="entity.delete, entity.purge, events.expire, entity.export, settings.update, "
        "key.create or key.revoke"
    )
    target: str | None = Field(description="The externalId or key id acted on; null for settings")
    details: dict[str, Any] = Field(description="Non-PII details, e.g. which settings fields changed")


class AuditPage(_Wire):
    data: list[AuditEntryOut] = Field(description="Newest first")
    nextCursor: str | None


class ExportEntityLine(EntityOut):
    """First line: the entity as GET /entities/{externalId} returns it, PII decrypted."""

    kind: Literal["entity"]


class ExportEventLine(EventOut):
    """One line per event, oldest first (timestamp, then server order), PII decrypted."""

    kind: Literal["event"]


class ExportStateLine(StateOut):
    """One line per state, by key."""

    kind: Literal["state"]


class ExportEndLine(_Wire):
    """The last line; a stream without it was cut short."""

    kind: Literal["end"]
    externalId: str
    events: int = Field(description="Event lines sent")
    states: int = Field(description="State lines sent")
    exportedAt: Timestamp


class ExportError(_Wire):
    code: str = Field(description="e.g. entity_deleted")
    message: str


class ExportErrorLine(_Wire):
    """Ends the stream instead of the end line when the entity was deleted meanwhile."""

    kind: Literal["error"]
    error: ExportError


EXPORT_LINE_MODELS: list[type[BaseModel]] = [
    ExportEntityLine,
    ExportEventLine,
    ExportStateLine,
    ExportEndLine,
    ExportErrorLine,
]
