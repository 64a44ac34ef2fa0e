"""The attack suite against the demo board: bastion's corpus (tests/security) aimed at its
actions, and the attacks on its own accounts and posts."""
