-- Who invoked a function in the last 24 hours without having invoked it in the 14 days before
-- (Lambda Invoke data events). A new invoker of a sensitive function is how a stolen role shows.
-- functionName is a name, name:alias, or a (partial, maybe qualified) ARN: all count as the function.
WITH recent AS (
  SELECT account_id,
         region,
         COALESCE(NULLIF(regexp_extract(json_extract_scalar(request_parameters, '$.functionName'), 'function:([^:]+)', 1), ''),
                  split_part(json_extract_scalar(request_parameters, '$.functionName'), ':', 1)) AS function_name,
         COALESCE(user_identity.session_context.session_issuer.arn, user_identity.arn, user_identity.invoked_by) AS principal,
         COUNT(*) AS calls,
         MIN(event_time) AS first_call,
         MAX(event_time) AS last_call,
         arbitrary(source_ip_address) AS a_source_ip
  FROM cloudtrail
  WHERE "date" >= CAST(current_date - INTERVAL '1' DAY AS varchar)
    AND event_time >= current_timestamp - INTERVAL '1' DAY
    AND event_source = 'lambda.amazonaws.com'
    AND event_name = 'Invoke'
  GROUP BY 1, 2, 3, 4
),
before AS (
  SELECT DISTINCT account_id,
         region,
         COALESCE(NULLIF(regexp_extract(json_extract_scalar(request_parameters, '$.functionName'), 'function:([^:]+)', 1), ''),
                  split_part(json_extract_scalar(request_parameters, '$.functionName'), ':', 1)) AS function_name,
         COALESCE(user_identity.session_context.session_issuer.arn, user_identity.arn, user_identity.invoked_by) AS principal
  FROM cloudtrail
  WHERE "date" >= CAST(current_date - INTERVAL '15' DAY AS varchar)
    AND event_time >= current_timestamp - INTERVAL '15' DAY
    AND event_time < current_timestamp - INTERVAL '1' DAY
    AND event_source = 'lambda.amazonaws.com'
    AND event_name = 'Invoke'
)
SELECT r.*
FROM recent r
LEFT JOIN before b
  ON b.account_id = r.account_id AND b.region = r.region
 AND b.function_name = r.function_name AND b.principal = r.principal
WHERE b.principal IS NULL
ORDER BY r.calls DESC
LIMIT 100;
