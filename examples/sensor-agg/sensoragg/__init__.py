"""sensor-agg: aggregates sensor readings over time windows; a ukedge example application."""
