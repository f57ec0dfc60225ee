"""Redmine synchronisation of the registry (python-redmine with a fixed engine).

config.py   the [redmine] table of icd.toml; the API key only from $REDMINE_API_KEY or a private key file
client.py   HTTP: working timeouts, retries with back-off, request counts, one-line errors, no key in messages
sync.py     pull / plan / push / conflicts (three-way against each task's `synced` values), scaffold
yamledit.py surgical, comment-preserving, atomic edits of interfaces.yaml
publish.py  the ICD documents as Markdown pages of the project's wiki
cli.py      the `icd redmine ...` commands
"""
