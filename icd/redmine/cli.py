"""`icd redmine ...` commands (thin shell over icd.redmine)."""
import typer

app = typer.Typer(help="Synchronise the registry with Redmine.", no_args_is_help=True)
