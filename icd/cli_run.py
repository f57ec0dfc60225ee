"""CLI commands `icd sample` and `icd run` (thin shell over icd.runner). Owned by the coordinator."""
import typer


def register(app: typer.Typer) -> None:
    """Add the sample/run commands to the main app."""
    return None
