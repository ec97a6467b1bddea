-- +goose Up
-- Quarantine: what an authenticated sender sent that the sink refused, kept byte for byte (bytea
-- holds anything, NUL included) with why, so that nothing Segment sent is silently gone.
-- `segment-sink rejected list|replay` reads it; rows older than REJECTED_RETENTION are deleted.
CREATE TABLE rejected_events (
    id               bigserial PRIMARY KEY,
    received_at      timestamptz NOT NULL DEFAULT now(),
    path             text NOT NULL,
    status           integer NOT NULL,
    reason           text NOT NULL,
    error            text NOT NULL,
    field            text,
    event_index      integer,
    content_type     text,
    body             bytea NOT NULL,
    replayed_at      timestamptz
);
CREATE INDEX rejected_events_received_at_idx ON rejected_events (received_at);

-- +goose Down
DROP TABLE rejected_events;
