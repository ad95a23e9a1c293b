"""One module per pipeline stage, glue only: each resolves its input artifacts, reads its parameter
dataclass and calls the library (``wtalcli``) that builds its output artifacts. Called by the CLI,
``run`` and ``ablate`` (the two stages that chain the others) and the tests."""
