-- Revenue and orders per day from "Order Completed" over the last 90 days. Orders whose revenue
-- is missing or not a number count as orders but add no revenue.
SELECT date_trunc('day', "timestamp") AS day,
       count(*) AS orders,
       coalesce(sum(CASE WHEN jsonb_typeof(properties->'revenue') = 'number'
                         THEN (properties->>'revenue')::numeric END), 0) AS revenue
FROM tracks
WHERE event = 'Order Completed'
  AND "timestamp" >= now() - interval '90 days'
GROUP BY 1
ORDER BY 1;
