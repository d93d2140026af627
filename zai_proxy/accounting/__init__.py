"""Token accounting: usage from the upstream, estimates, prices, the model catalog."""
