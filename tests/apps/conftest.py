"""tests/apps/: apps written as their users would write them, each a project of its own.

An app's tests run in a process of their own (``test_expenses.py`` here): they put the
app's settings in their process's environment (``BASTION_STORE``,
``BASTION_SECRET_KEY``…) before importing it, as its authors would, and collected into
bastion's own run they would set them for every other test too.
"""

collect_ignore = ["expenses"]
