-- Accounts (groups) with their latest name and plan, and how many users joined each.
SELECT a.group_id,
       a.traits->>'name' AS name,
       a.traits->>'plan' AS plan,
       count(DISTINCT g.user_id) AS users,
       a.last_seen_at
FROM accounts a
JOIN groups g ON g.group_id = a.group_id
GROUP BY a.group_id, a.traits, a.last_seen_at
ORDER BY users DESC, a.group_id;
