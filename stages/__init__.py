"""One module per pipeline stage: plain functions from input artifacts and typed parameters to
output artifacts, called by the CLI, by ``train-dcc``'s refresh rounds and by the tests."""
