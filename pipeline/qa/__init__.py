"""QA: the yardstick (seeded noisy copies scored against the same reference), the classical filters,
the measures on the real scan, and the figures and page a physicist reads."""
