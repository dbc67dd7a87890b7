"""Reference applications built on Bastion."""
