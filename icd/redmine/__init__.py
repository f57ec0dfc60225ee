"""Redmine synchronisation of the registry (python-redmine)."""
