"""What operators see: Prometheus metrics, the access log, structured logs."""
