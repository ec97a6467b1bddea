-- Weekly active people over the last 12 weeks (weeks start on Monday), identity-resolved.
WITH activity AS (
    SELECT user_id, anonymous_id, "timestamp" FROM tracks
    UNION ALL SELECT user_id, anonymous_id, "timestamp" FROM pages
    UNION ALL SELECT user_id, anonymous_id, "timestamp" FROM screens
    UNION ALL SELECT user_id, anonymous_id, "timestamp" FROM identifies
)
SELECT date_trunc('week', a."timestamp") AS week,
       count(DISTINCT coalesce(i.user_id, a.user_id, a.anonymous_id)) AS active_people
FROM activity a
LEFT JOIN identities i ON i.id = coalesce(a.user_id, a.anonymous_id)
WHERE a."timestamp" >= date_trunc('week', now()) - interval '11 weeks'
GROUP BY 1
ORDER BY 1;
