-- Denied API calls by principal, last 24 hours. Many denials across many APIs is enumeration
-- (a stolen credential probing what it may do); many on one API is usually a broken deployment.
SELECT account_id,
       COALESCE(user_identity.session_context.session_issuer.arn, user_identity.arn) AS principal,
       COUNT(*) AS denied,
       COUNT(DISTINCT event_source || ':' || event_name) AS distinct_apis,
       COUNT(DISTINCT region) AS regions,
       COUNT(DISTINCT source_ip_address) AS source_ips,
       MIN(event_time) AS first_denied,
       MAX(event_time) AS last_denied,
       slice(array_agg(DISTINCT event_source || ':' || event_name), 1, 10) AS some_apis
FROM cloudtrail
WHERE "date" >= CAST(current_date - INTERVAL '1' DAY AS varchar)
  AND event_time >= current_timestamp - INTERVAL '1' DAY
  AND (error_code LIKE '%AccessDenied%' OR error_code LIKE '%UnauthorizedOperation%'
       OR error_code LIKE '%Unauthorized%' OR error_code = 'Forbidden')
GROUP BY 1, 2
ORDER BY denied DESC
LIMIT 100;
