"""The attack suite: hostile requests against the quickstart and the board (issue 9)."""
