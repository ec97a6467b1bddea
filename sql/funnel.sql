-- A three-step funnel over the last 30 days: people who viewed a product, then added one to
-- their cart, then completed an order, each step after the one before (any time later).
WITH steps AS (
    SELECT coalesce(i.user_id, t.user_id, t.anonymous_id) AS person, t.event, t."timestamp"
    FROM tracks t
    LEFT JOIN identities i ON i.id = coalesce(t.user_id, t.anonymous_id)
    WHERE t.event IN ('Product Viewed', 'Product Added', 'Order Completed')
      AND t."timestamp" >= now() - interval '30 days'
), viewed AS (
    SELECT person, min("timestamp") AS at FROM steps WHERE event = 'Product Viewed' GROUP BY person
), added AS (
    SELECT v.person, min(s."timestamp") AS at
    FROM viewed v JOIN steps s ON s.person = v.person AND s.event = 'Product Added' AND s."timestamp" >= v.at
    GROUP BY v.person
), completed AS (
    SELECT a.person, min(s."timestamp") AS at
    FROM added a JOIN steps s ON s.person = a.person AND s.event = 'Order Completed' AND s."timestamp" >= a.at
    GROUP BY a.person
)
SELECT (SELECT count(*) FROM viewed) AS viewed,
       (SELECT count(*) FROM added) AS added,
       (SELECT count(*) FROM completed) AS completed;
