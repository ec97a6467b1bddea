-- +goose Up
-- One table per Segment event type. Every table shares the common columns; `extra` keeps every
-- top-level field that has no column of its own, so nothing an event carried is lost.
-- message_id is the primary key: redeliveries of the same message are absorbed by the upsert.
-- Indexes: by time, and by user over time, the two shapes of almost every analytics query; plus
-- the per-type lookups (tracks by event name, groups by group, aliases by previous id).

CREATE TABLE tracks (
    message_id         text PRIMARY KEY,
    user_id            text,
    anonymous_id       text,
    "timestamp"        timestamptz NOT NULL,
    original_timestamp timestamptz,
    sent_at            timestamptz,
    received_at        timestamptz NOT NULL,
    context            jsonb,
    integrations       jsonb,
    event              text NOT NULL,
    properties         jsonb,
    extra              jsonb,
    loaded_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tracks_timestamp_idx ON tracks ("timestamp");
CREATE INDEX tracks_user_id_timestamp_idx ON tracks (user_id, "timestamp");

CREATE TABLE identifies (
    message_id         text PRIMARY KEY,
    user_id            text,
    anonymous_id       text,
    "timestamp"        timestamptz NOT NULL,
    original_timestamp timestamptz,
    sent_at            timestamptz,
    received_at        timestamptz NOT NULL,
    context            jsonb,
    integrations       jsonb,
    traits             jsonb,
    extra              jsonb,
    loaded_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX identifies_timestamp_idx ON identifies ("timestamp");
CREATE INDEX identifies_user_id_timestamp_idx ON identifies (user_id, "timestamp");

CREATE TABLE pages (
    message_id         text PRIMARY KEY,
    user_id            text,
    anonymous_id       text,
    "timestamp"        timestamptz NOT NULL,
    original_timestamp timestamptz,
    sent_at            timestamptz,
    received_at        timestamptz NOT NULL,
    context            jsonb,
    integrations       jsonb,
    name               text,
    category           text,
    properties         jsonb,
    extra              jsonb,
    loaded_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pages_timestamp_idx ON pages ("timestamp");
CREATE INDEX pages_user_id_timestamp_idx ON pages (user_id, "timestamp");

CREATE TABLE screens (
    message_id         text PRIMARY KEY,
    user_id            text,
    anonymous_id       text,
    "timestamp"        timestamptz NOT NULL,
    original_timestamp timestamptz,
    sent_at            timestamptz,
    received_at        timestamptz NOT NULL,
    context            jsonb,
    integrations       jsonb,
    name               text,
    category           text,
    properties         jsonb,
    extra              jsonb,
    loaded_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX screens_timestamp_idx ON screens ("timestamp");
CREATE INDEX screens_user_id_timestamp_idx ON screens (user_id, "timestamp");

CREATE TABLE groups (
    message_id         text PRIMARY KEY,
    user_id            text,
    anonymous_id       text,
    "timestamp"        timestamptz NOT NULL,
    original_timestamp timestamptz,
    sent_at            timestamptz,
    received_at        timestamptz NOT NULL,
    context            jsonb,
    integrations       jsonb,
    group_id           text NOT NULL,
    traits             jsonb,
    extra              jsonb,
    loaded_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX groups_timestamp_idx ON groups ("timestamp");
CREATE INDEX groups_user_id_timestamp_idx ON groups (user_id, "timestamp");

CREATE TABLE aliases (
    message_id         text PRIMARY KEY,
    user_id            text,
    anonymous_id       text,
    "timestamp"        timestamptz NOT NULL,
    original_timestamp timestamptz,
    sent_at            timestamptz,
    received_at        timestamptz NOT NULL,
    context            jsonb,
    integrations       jsonb,
    previous_id        text NOT NULL,
    extra              jsonb,
    loaded_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX aliases_timestamp_idx ON aliases ("timestamp");
CREATE INDEX aliases_user_id_timestamp_idx ON aliases (user_id, "timestamp");

CREATE INDEX tracks_event_timestamp_idx ON tracks (event, "timestamp");
CREATE INDEX groups_group_id_idx ON groups (group_id);
CREATE INDEX aliases_previous_id_idx ON aliases (previous_id);

-- +goose Down
DROP TABLE aliases;
DROP TABLE groups;
DROP TABLE screens;
DROP TABLE pages;
DROP TABLE identifies;
DROP TABLE tracks;
