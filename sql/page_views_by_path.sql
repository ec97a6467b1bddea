-- Page views and visitors by path over the last 30 days (the path from the page call's
-- properties, else from its context).
SELECT coalesce(properties->>'path', context_page_path) AS path,
       count(*) AS views,
       count(DISTINCT coalesce(user_id, anonymous_id)) AS visitors
FROM pages
WHERE "timestamp" >= now() - interval '30 days'
GROUP BY 1
ORDER BY views DESC, path
LIMIT 50;
