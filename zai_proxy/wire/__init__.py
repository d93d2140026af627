"""The request's vocabulary: the exchange record, the route table, headers, JSON bodies."""
