"""Plan-quota awareness: the polled budget, pacing, local refusal, sharing."""
