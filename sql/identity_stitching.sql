-- Every person with every id they were seen under and their number of events: anonymous
-- browsing before sign-up and ids merged by alias are stitched to the canonical userId.
WITH seen AS (
    SELECT user_id, anonymous_id FROM tracks
    UNION ALL SELECT user_id, anonymous_id FROM pages
    UNION ALL SELECT user_id, anonymous_id FROM screens
    UNION ALL SELECT user_id, anonymous_id FROM identifies
), resolved AS (
    SELECT coalesce(i.user_id, s.user_id, s.anonymous_id) AS person, s.user_id, s.anonymous_id
    FROM seen s
    LEFT JOIN identities i ON i.id = coalesce(s.user_id, s.anonymous_id)
)
SELECT person,
       array(SELECT DISTINCT id FROM unnest(array_agg(user_id) || array_agg(anonymous_id)) AS id
             WHERE id IS NOT NULL ORDER BY id) AS ids,
       count(*) AS events
FROM resolved
GROUP BY person
ORDER BY events DESC, person;
