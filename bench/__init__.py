"""vecreg-bench: batched vector regression by gradient descent, several ways, timed."""
