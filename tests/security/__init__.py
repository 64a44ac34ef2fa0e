"""The attack suite: hostile requests against the quickstart and the board (issue 9). The
attacks on the board's own accounts and posts, and the corpus aimed at its actions, are
beside the board: examples/board/tests/security."""
