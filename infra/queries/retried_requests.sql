-- Asynchronous requests Lambda ran more than once, last 24 hours. A retry keeps its request id,
-- so a request id with several REPORT lines is a retried event: the retry_storm finding's
-- evidence, per function. Attempts count distinct log events, so a REPORT line delivered twice
-- is one attempt. A text REPORT line without a Status field has status 'unknown', not 'error'.
SELECT account_id,
       region,
       function_name,
       COUNT(*) AS requests_retried,
       SUM(attempts) AS attempts,
       MAX(attempts) AS max_attempts,
       SUM(failed) AS failed_attempts
FROM (
  SELECT account_id,
         region,
         function_name,
         request_id,
         COUNT(DISTINCT log_event_id) AS attempts,
         COUNT(DISTINCT CASE WHEN status IN ('error', 'timeout', 'out_of_memory') THEN log_event_id END) AS failed
  FROM lambda_invocations
  WHERE "date" >= CAST(current_date - INTERVAL '1' DAY AS varchar)
    AND end_time >= current_timestamp - INTERVAL '1' DAY
    AND request_id IS NOT NULL
  GROUP BY account_id, region, function_name, request_id
  HAVING COUNT(DISTINCT log_event_id) > 1
) AS retried
GROUP BY account_id, region, function_name
ORDER BY attempts DESC
LIMIT 50;
