"""Hold-out benchmark: models the optimizer was never tuned on, run through the user's CLI flow and scored on
test data the optimizer never saw."""
