-- The 20 most frequent track events of the last 30 days, with how many people sent each.
SELECT t.event,
       count(*) AS events,
       count(DISTINCT coalesce(i.user_id, t.user_id, t.anonymous_id)) AS people
FROM tracks t
LEFT JOIN identities i ON i.id = coalesce(t.user_id, t.anonymous_id)
WHERE t."timestamp" >= now() - interval '30 days'
GROUP BY t.event
ORDER BY events DESC, t.event
LIMIT 20;
