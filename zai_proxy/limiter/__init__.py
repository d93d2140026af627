"""The account-level limiter: learned rate and concurrency, admission, shared state."""
