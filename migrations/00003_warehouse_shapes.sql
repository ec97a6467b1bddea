-- +goose Up
-- The shapes analysts expect from a Segment warehouse, kept exact and current by the database
-- itself or by the flush that writes the events.

-- Flattened context fields, named as Segment names them, computed from context on write
-- (generated columns: queried like any column; their cost on the write path is in the README).

ALTER TABLE tracks
    ADD COLUMN context_ip text GENERATED ALWAYS AS (context->>'ip') STORED,
    ADD COLUMN context_user_agent text GENERATED ALWAYS AS (context->>'userAgent') STORED,
    ADD COLUMN context_locale text GENERATED ALWAYS AS (context->>'locale') STORED,
    ADD COLUMN context_page_url text GENERATED ALWAYS AS (context#>>'{page,url}') STORED,
    ADD COLUMN context_page_path text GENERATED ALWAYS AS (context#>>'{page,path}') STORED,
    ADD COLUMN context_page_referrer text GENERATED ALWAYS AS (context#>>'{page,referrer}') STORED,
    ADD COLUMN context_page_title text GENERATED ALWAYS AS (context#>>'{page,title}') STORED,
    ADD COLUMN context_library_name text GENERATED ALWAYS AS (context#>>'{library,name}') STORED,
    ADD COLUMN context_library_version text GENERATED ALWAYS AS (context#>>'{library,version}') STORED,
    ADD COLUMN context_campaign_name text GENERATED ALWAYS AS (context#>>'{campaign,name}') STORED,
    ADD COLUMN context_campaign_source text GENERATED ALWAYS AS (context#>>'{campaign,source}') STORED,
    ADD COLUMN context_campaign_medium text GENERATED ALWAYS AS (context#>>'{campaign,medium}') STORED,
    ADD COLUMN context_campaign_term text GENERATED ALWAYS AS (context#>>'{campaign,term}') STORED,
    ADD COLUMN context_campaign_content text GENERATED ALWAYS AS (context#>>'{campaign,content}') STORED;
ALTER TABLE identifies
    ADD COLUMN context_ip text GENERATED ALWAYS AS (context->>'ip') STORED,
    ADD COLUMN context_user_agent text GENERATED ALWAYS AS (context->>'userAgent') STORED,
    ADD COLUMN context_locale text GENERATED ALWAYS AS (context->>'locale') STORED,
    ADD COLUMN context_page_url text GENERATED ALWAYS AS (context#>>'{page,url}') STORED,
    ADD COLUMN context_page_path text GENERATED ALWAYS AS (context#>>'{page,path}') STORED,
    ADD COLUMN context_page_referrer text GENERATED ALWAYS AS (context#>>'{page,referrer}') STORED,
    ADD COLUMN context_page_title text GENERATED ALWAYS AS (context#>>'{page,title}') STORED,
    ADD COLUMN context_library_name text GENERATED ALWAYS AS (context#>>'{library,name}') STORED,
    ADD COLUMN context_library_version text GENERATED ALWAYS AS (context#>>'{library,version}') STORED,
    ADD COLUMN context_campaign_name text GENERATED ALWAYS AS (context#>>'{campaign,name}') STORED,
    ADD COLUMN context_campaign_source text GENERATED ALWAYS AS (context#>>'{campaign,source}') STORED,
    ADD COLUMN context_campaign_medium text GENERATED ALWAYS AS (context#>>'{campaign,medium}') STORED,
    ADD COLUMN context_campaign_term text GENERATED ALWAYS AS (context#>>'{campaign,term}') STORED,
    ADD COLUMN context_campaign_content text GENERATED ALWAYS AS (context#>>'{campaign,content}') STORED;
ALTER TABLE pages
    ADD COLUMN context_ip text GENERATED ALWAYS AS (context->>'ip') STORED,
    ADD COLUMN context_user_agent text GENERATED ALWAYS AS (context->>'userAgent') STORED,
    ADD COLUMN context_locale text GENERATED ALWAYS AS (context->>'locale') STORED,
    ADD COLUMN context_page_url text GENERATED ALWAYS AS (context#>>'{page,url}') STORED,
    ADD COLUMN context_page_path text GENERATED ALWAYS AS (context#>>'{page,path}') STORED,
    ADD COLUMN context_page_referrer text GENERATED ALWAYS AS (context#>>'{page,referrer}') STORED,
    ADD COLUMN context_page_title text GENERATED ALWAYS AS (context#>>'{page,title}') STORED,
    ADD COLUMN context_library_name text GENERATED ALWAYS AS (context#>>'{library,name}') STORED,
    ADD COLUMN context_library_version text GENERATED ALWAYS AS (context#>>'{library,version}') STORED,
    ADD COLUMN context_campaign_name text GENERATED ALWAYS AS (context#>>'{campaign,name}') STORED,
    ADD COLUMN context_campaign_source text GENERATED ALWAYS AS (context#>>'{campaign,source}') STORED,
    ADD COLUMN context_campaign_medium text GENERATED ALWAYS AS (context#>>'{campaign,medium}') STORED,
    ADD COLUMN context_campaign_term text GENERATED ALWAYS AS (context#>>'{campaign,term}') STORED,
    ADD COLUMN context_campaign_content text GENERATED ALWAYS AS (context#>>'{campaign,content}') STORED;
ALTER TABLE screens
    ADD COLUMN context_ip text GENERATED ALWAYS AS (context->>'ip') STORED,
    ADD COLUMN context_user_agent text GENERATED ALWAYS AS (context->>'userAgent') STORED,
    ADD COLUMN context_locale text GENERATED ALWAYS AS (context->>'locale') STORED,
    ADD COLUMN context_page_url text GENERATED ALWAYS AS (context#>>'{page,url}') STORED,
    ADD COLUMN context_page_path text GENERATED ALWAYS AS (context#>>'{page,path}') STORED,
    ADD COLUMN context_page_referrer text GENERATED ALWAYS AS (context#>>'{page,referrer}') STORED,
    ADD COLUMN context_page_title text GENERATED ALWAYS AS (context#>>'{page,title}') STORED,
    ADD COLUMN context_library_name text GENERATED ALWAYS AS (context#>>'{library,name}') STORED,
    ADD COLUMN context_library_version text GENERATED ALWAYS AS (context#>>'{library,version}') STORED,
    ADD COLUMN context_campaign_name text GENERATED ALWAYS AS (context#>>'{campaign,name}') STORED,
    ADD COLUMN context_campaign_source text GENERATED ALWAYS AS (context#>>'{campaign,source}') STORED,
    ADD COLUMN context_campaign_medium text GENERATED ALWAYS AS (context#>>'{campaign,medium}') STORED,
    ADD COLUMN context_campaign_term text GENERATED ALWAYS AS (context#>>'{campaign,term}') STORED,
    ADD COLUMN context_campaign_content text GENERATED ALWAYS AS (context#>>'{campaign,content}') STORED;
ALTER TABLE groups
    ADD COLUMN context_ip text GENERATED ALWAYS AS (context->>'ip') STORED,
    ADD COLUMN context_user_agent text GENERATED ALWAYS AS (context->>'userAgent') STORED,
    ADD COLUMN context_locale text GENERATED ALWAYS AS (context->>'locale') STORED,
    ADD COLUMN context_page_url text GENERATED ALWAYS AS (context#>>'{page,url}') STORED,
    ADD COLUMN context_page_path text GENERATED ALWAYS AS (context#>>'{page,path}') STORED,
    ADD COLUMN context_page_referrer text GENERATED ALWAYS AS (context#>>'{page,referrer}') STORED,
    ADD COLUMN context_page_title text GENERATED ALWAYS AS (context#>>'{page,title}') STORED,
    ADD COLUMN context_library_name text GENERATED ALWAYS AS (context#>>'{library,name}') STORED,
    ADD COLUMN context_library_version text GENERATED ALWAYS AS (context#>>'{library,version}') STORED,
    ADD COLUMN context_campaign_name text GENERATED ALWAYS AS (context#>>'{campaign,name}') STORED,
    ADD COLUMN context_campaign_source text GENERATED ALWAYS AS (context#>>'{campaign,source}') STORED,
    ADD COLUMN context_campaign_medium text GENERATED ALWAYS AS (context#>>'{campaign,medium}') STORED,
    ADD COLUMN context_campaign_term text GENERATED ALWAYS AS (context#>>'{campaign,term}') STORED,
    ADD COLUMN context_campaign_content text GENERATED ALWAYS AS (context#>>'{campaign,content}') STORED;
ALTER TABLE aliases
    ADD COLUMN context_ip text GENERATED ALWAYS AS (context->>'ip') STORED,
    ADD COLUMN context_user_agent text GENERATED ALWAYS AS (context->>'userAgent') STORED,
    ADD COLUMN context_locale text GENERATED ALWAYS AS (context->>'locale') STORED,
    ADD COLUMN context_page_url text GENERATED ALWAYS AS (context#>>'{page,url}') STORED,
    ADD COLUMN context_page_path text GENERATED ALWAYS AS (context#>>'{page,path}') STORED,
    ADD COLUMN context_page_referrer text GENERATED ALWAYS AS (context#>>'{page,referrer}') STORED,
    ADD COLUMN context_page_title text GENERATED ALWAYS AS (context#>>'{page,title}') STORED,
    ADD COLUMN context_library_name text GENERATED ALWAYS AS (context#>>'{library,name}') STORED,
    ADD COLUMN context_library_version text GENERATED ALWAYS AS (context#>>'{library,version}') STORED,
    ADD COLUMN context_campaign_name text GENERATED ALWAYS AS (context#>>'{campaign,name}') STORED,
    ADD COLUMN context_campaign_source text GENERATED ALWAYS AS (context#>>'{campaign,source}') STORED,
    ADD COLUMN context_campaign_medium text GENERATED ALWAYS AS (context#>>'{campaign,medium}') STORED,
    ADD COLUMN context_campaign_term text GENERATED ALWAYS AS (context#>>'{campaign,term}') STORED,
    ADD COLUMN context_campaign_content text GENERATED ALWAYS AS (context#>>'{campaign,content}') STORED;

-- users: one row per user_id. traits holds the newest value of every trait across the user's
-- identify calls, and trait_timestamps when each was set (Unix microseconds), so that a late, older
-- identify never overwrites a newer value. first_seen_at and last_seen_at span every event of
-- the user. The flush that writes the events updates it, in the same transaction.
CREATE TABLE users (
    user_id          text PRIMARY KEY,
    traits           jsonb NOT NULL DEFAULT '{}',
    trait_timestamps jsonb NOT NULL DEFAULT '{}',
    first_seen_at    timestamptz NOT NULL,
    last_seen_at     timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- accounts: the same for groups, one row per group_id, from group calls.
CREATE TABLE accounts (
    group_id         text PRIMARY KEY,
    traits           jsonb NOT NULL DEFAULT '{}',
    trait_timestamps jsonb NOT NULL DEFAULT '{}',
    first_seen_at    timestamptz NOT NULL,
    last_seen_at     timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- segment_sink_merge_traits merges traits set at new_times into traits set at old_times: per
-- key, the value set last wins (a tie goes to the new one). Both times objects map a trait to
-- the Unix time in microseconds it was set at.
-- +goose StatementBegin
CREATE FUNCTION segment_sink_merge_traits(old_traits jsonb, old_times jsonb, new_traits jsonb, new_times jsonb,
                                          OUT traits jsonb, OUT times jsonb)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(jsonb_object_agg(key, CASE WHEN take_new THEN n ELSE o END), '{}'),
           coalesce(jsonb_object_agg(key, CASE WHEN take_new THEN nt ELSE ot END), '{}')
    FROM (
        SELECT key, old_traits -> key AS o, new_traits -> key AS n, old_times -> key AS ot, new_times -> key AS nt,
               new_traits ? key AND (NOT old_traits ? key
                   OR coalesce((new_times ->> key)::numeric, 0) >= coalesce((old_times ->> key)::numeric, 0)) AS take_new
        FROM (SELECT jsonb_object_keys(old_traits) UNION SELECT jsonb_object_keys(new_traits)) AS keys (key)
    ) merged
$$;
-- +goose StatementEnd

-- identities: every id a person was known by (an anonymousId they identified from, or an id
-- aliased to another), resolved to the canonical userId: the latest identify or alias wins, and
-- chains (a userId itself aliased later) are followed. Count people, not ids, with
-- coalesce(identities.user_id, user_id, anonymous_id).
CREATE VIEW identities AS
WITH RECURSIVE links AS (
    SELECT DISTINCT ON (id) id, user_id
    FROM (
        SELECT anonymous_id AS id, user_id, "timestamp" FROM identifies
        WHERE anonymous_id IS NOT NULL AND user_id IS NOT NULL
        UNION ALL
        SELECT previous_id, user_id, "timestamp" FROM aliases WHERE previous_id <> user_id
    ) observed
    ORDER BY id, "timestamp" DESC
), resolved AS (
    SELECT id, user_id, 1 AS depth, ARRAY[id] AS path FROM links
    UNION ALL
    SELECT r.id, l.user_id, r.depth + 1, r.path || l.id
    FROM resolved r JOIN links l ON l.id = r.user_id
    WHERE l.id <> ALL (r.path) AND r.depth < 32
)
SELECT DISTINCT ON (id) id, user_id FROM resolved ORDER BY id, depth DESC;

-- For identities: identify calls by anonymous_id.
CREATE INDEX identifies_anonymous_id_idx ON identifies (anonymous_id, "timestamp") WHERE anonymous_id IS NOT NULL AND user_id IS NOT NULL;
-- For "who was active lately" on users.
CREATE INDEX users_last_seen_at_idx ON users (last_seen_at);

-- event_views: the per-event views that `segment-sink views refresh` made (one per track event
-- name, e.g. order_completed), so that it replaces only its own views and never a table or view
-- of the user's that happens to have the same name.
CREATE TABLE event_views (
    view_name    text PRIMARY KEY,
    event        text NOT NULL UNIQUE,
    columns      integer NOT NULL,
    refreshed_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE event_views;
DROP INDEX users_last_seen_at_idx;
DROP INDEX identifies_anonymous_id_idx;
DROP VIEW identities;
DROP FUNCTION segment_sink_merge_traits(jsonb, jsonb, jsonb, jsonb);
DROP TABLE accounts;
DROP TABLE users;
ALTER TABLE tracks DROP COLUMN context_ip, DROP COLUMN context_user_agent, DROP COLUMN context_locale, DROP COLUMN context_page_url, DROP COLUMN context_page_path, DROP COLUMN context_page_referrer, DROP COLUMN context_page_title, DROP COLUMN context_library_name, DROP COLUMN context_library_version, DROP COLUMN context_campaign_name, DROP COLUMN context_campaign_source, DROP COLUMN context_campaign_medium, DROP COLUMN context_campaign_term, DROP COLUMN context_campaign_content;
ALTER TABLE identifies DROP COLUMN context_ip, DROP COLUMN context_user_agent, DROP COLUMN context_locale, DROP COLUMN context_page_url, DROP COLUMN context_page_path, DROP COLUMN context_page_referrer, DROP COLUMN context_page_title, DROP COLUMN context_library_name, DROP COLUMN context_library_version, DROP COLUMN context_campaign_name, DROP COLUMN context_campaign_source, DROP COLUMN context_campaign_medium, DROP COLUMN context_campaign_term, DROP COLUMN context_campaign_content;
ALTER TABLE pages DROP COLUMN context_ip, DROP COLUMN context_user_agent, DROP COLUMN context_locale, DROP COLUMN context_page_url, DROP COLUMN context_page_path, DROP COLUMN context_page_referrer, DROP COLUMN context_page_title, DROP COLUMN context_library_name, DROP COLUMN context_library_version, DROP COLUMN context_campaign_name, DROP COLUMN context_campaign_source, DROP COLUMN context_campaign_medium, DROP COLUMN context_campaign_term, DROP COLUMN context_campaign_content;
ALTER TABLE screens DROP COLUMN context_ip, DROP COLUMN context_user_agent, DROP COLUMN context_locale, DROP COLUMN context_page_url, DROP COLUMN context_page_path, DROP COLUMN context_page_referrer, DROP COLUMN context_page_title, DROP COLUMN context_library_name, DROP COLUMN context_library_version, DROP COLUMN context_campaign_name, DROP COLUMN context_campaign_source, DROP COLUMN context_campaign_medium, DROP COLUMN context_campaign_term, DROP COLUMN context_campaign_content;
ALTER TABLE groups DROP COLUMN context_ip, DROP COLUMN context_user_agent, DROP COLUMN context_locale, DROP COLUMN context_page_url, DROP COLUMN context_page_path, DROP COLUMN context_page_referrer, DROP COLUMN context_page_title, DROP COLUMN context_library_name, DROP COLUMN context_library_version, DROP COLUMN context_campaign_name, DROP COLUMN context_campaign_source, DROP COLUMN context_campaign_medium, DROP COLUMN context_campaign_term, DROP COLUMN context_campaign_content;
ALTER TABLE aliases DROP COLUMN context_ip, DROP COLUMN context_user_agent, DROP COLUMN context_locale, DROP COLUMN context_page_url, DROP COLUMN context_page_path, DROP COLUMN context_page_referrer, DROP COLUMN context_page_title, DROP COLUMN context_library_name, DROP COLUMN context_library_version, DROP COLUMN context_campaign_name, DROP COLUMN context_campaign_source, DROP COLUMN context_campaign_medium, DROP COLUMN context_campaign_term, DROP COLUMN context_campaign_content;
