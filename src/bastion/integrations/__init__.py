"""What bastion installs into other libraries: the Jinja helpers (``bastion.templates()``)."""
