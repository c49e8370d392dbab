-- Top throttled functions, last 24 hours: the metric stream's Throttles per function, with the
-- invocations and errors beside them. A function throttled while its account's pool is full is
-- the noisy-neighbour case; one throttled under its own reserved concurrency needs a higher cap.
-- element_at, not dimensions['FunctionName']: Athena's subscript fails on a row without the key.
-- A metric stream sends each function metric once per dimension set ({FunctionName},
-- {FunctionName, Resource}, {FunctionName, ExecutedVersion}); keeping the plain set counts it once.
SELECT account_id,
       region,
       element_at(dimensions, 'FunctionName') AS function_name,
       SUM(CASE WHEN metric_name = 'Throttles' THEN value_sum ELSE 0 END) AS throttles,
       SUM(CASE WHEN metric_name = 'Invocations' THEN value_sum ELSE 0 END) AS invocations,
       SUM(CASE WHEN metric_name = 'Errors' THEN value_sum ELSE 0 END) AS errors,
       MAX(CASE WHEN metric_name = 'ConcurrentExecutions' THEN value_max END) AS peak_concurrency
FROM lambda_metrics
WHERE "date" >= CAST(current_date - INTERVAL '1' DAY AS varchar)
  AND "timestamp" >= current_timestamp - INTERVAL '1' DAY
  AND element_at(dimensions, 'FunctionName') IS NOT NULL
  AND element_at(dimensions, 'Resource') IS NULL
  AND element_at(dimensions, 'ExecutedVersion') IS NULL
GROUP BY account_id, region, element_at(dimensions, 'FunctionName')
HAVING SUM(CASE WHEN metric_name = 'Throttles' THEN value_sum ELSE 0 END) > 0
ORDER BY throttles DESC
LIMIT 50;
