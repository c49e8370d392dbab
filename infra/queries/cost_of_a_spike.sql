-- What each function cost, per 5-minute window, over the last 24 hours: billed GB-seconds and
-- requests at on-demand prices (USD, us-east-1; arm64 is 20% cheaper per GB-second). The windows
-- far above a function's own median are the spike; the sum over them is its bill.
WITH windows AS (
  SELECT account_id,
         region,
         function_name,
         from_unixtime(floor(to_unixtime(start_time) / 300) * 300) AS window_start,
         COUNT(*) AS invocations,
         SUM(billed_duration_ms * memory_size_mb) / 1024.0 / 1000.0 AS gb_seconds,
         SUM(CASE WHEN status = 'timeout' THEN 1 ELSE 0 END) AS timeouts
  FROM lambda_invocations
  WHERE "date" >= CAST(current_date - INTERVAL '1' DAY AS varchar)
    AND start_time >= current_timestamp - INTERVAL '1' DAY
  GROUP BY 1, 2, 3, 4
),
priced AS (
  SELECT *,
         gb_seconds * 0.0000166667 + invocations * 0.0000002 AS cost_usd,
         approx_percentile(gb_seconds, 0.5) OVER (PARTITION BY account_id, region, function_name) AS median_gb_seconds
  FROM windows
)
SELECT account_id, region, function_name, window_start, invocations, timeouts,
       round(gb_seconds, 1) AS gb_seconds,
       round(cost_usd, 4) AS cost_usd,
       round(gb_seconds / nullif(median_gb_seconds, 0), 1) AS times_median
FROM priced
WHERE gb_seconds > 3 * median_gb_seconds
ORDER BY cost_usd DESC
LIMIT 100;
