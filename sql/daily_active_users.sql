-- Daily active people over the last 30 days: anyone who sent a track, page, screen or identify,
-- counted once however many ids they used (anonymous before signing up, aliased later).
WITH activity AS (
    SELECT user_id, anonymous_id, "timestamp" FROM tracks
    UNION ALL SELECT user_id, anonymous_id, "timestamp" FROM pages
    UNION ALL SELECT user_id, anonymous_id, "timestamp" FROM screens
    UNION ALL SELECT user_id, anonymous_id, "timestamp" FROM identifies
)
SELECT date_trunc('day', a."timestamp") AS day,
       count(DISTINCT coalesce(i.user_id, a.user_id, a.anonymous_id)) AS active_people
FROM activity a
LEFT JOIN identities i ON i.id = coalesce(a.user_id, a.anonymous_id)
WHERE a."timestamp" >= now() - interval '30 days'
GROUP BY 1
ORDER BY 1;
