-- Every finding of the last 24 hours, newest first: what the alert emails said, in one table,
-- with what was suppressed and why.
SELECT start,
       "end",
       account_id,
       region,
       kind,
       severity,
       status,
       subject,
       summary,
       observed,
       baseline,
       estimated_cost_usd,
       suppressed,
       suppression_reason,
       id
FROM findings
WHERE "date" >= CAST(current_date - INTERVAL '1' DAY AS varchar)
  AND start >= current_timestamp - INTERVAL '1' DAY
ORDER BY start DESC
LIMIT 500;
